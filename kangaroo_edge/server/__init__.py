"""`kangaroo-edge serve`: an OpenAI-compatible HTTP server over one KangarooLM.

validation.py (request bodies -> GenerationRequest; the table of refused fields), shapes.py
(OpenAI response bodies, llama-server's /completion bodies and llama.cpp's timings), errors.py
(OpenAI error bodies), worker.py (the model's thread, its bounded queue, the timeout), prompt.py
(chat prompts with message text kept as text), responses.py (a job's events -> JSON or
server-sent events with keep-alives), native.py (llama-server's /tokenize, /detokenize,
/apply-template, /props), app.py (routes, Host allowlist, API key, bodies), http_server.py
(uvicorn and shutdown).
"""
