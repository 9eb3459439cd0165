"""`kangaroo-edge serve`: an OpenAI-compatible HTTP server over one KangarooLM.

validation.py (request bodies -> GenerationRequest), shapes.py (OpenAI response bodies and
llama.cpp's timings), errors.py (OpenAI error bodies), worker.py (the model's thread and its
bounded queue), responses.py (a job's events -> JSON or server-sent events), app.py (routes,
API key, bodies), http_server.py (uvicorn and shutdown).
"""
