#include "adapter_graphs.h"

namespace ke {

namespace {
// The adapter's graph kinds (GraphKind): one per method below.
const GraphKind DRAFT_STEP{"draft_step"};
const GraphKind BONUS_STEP{"bonus_step"};
const GraphKind ADAPTER_KV{"adapter_kv"};
const GraphKind ADAPTER_LOGITS{"adapter_logits"};
}  // namespace

AdapterGraphs::AdapterGraphs(const Model & model, Runner & runner, KvCache & model_kv, Adapter & adapter)
    : model_(model), runner_(runner), model_kv_(model_kv), adapter_(adapter) {}

GraphRun AdapterGraphs::shallow_step(const GraphKind & kind, const int32_t & token, int pos, Output output) const {
    GraphRun g(kind, model_kv_, ForwardSpec::every_row(0, adapter_.params().exit_layer, 1, output));
    g.also_writes = &adapter_.kv();
    g.tokens = &token;
    g.pos0 = pos;
    return g;
}

GraphRun AdapterGraphs::adapter_rows(const GraphKind & kind, const float * hidden, int n, int pos0,
                                     Output output) const {
    const int N = adapter_.params().exit_layer;
    GraphRun g(kind, adapter_.kv(), ForwardSpec::every_row(N, N, n, output));  // [N, N): the model runs no layer
    g.hidden = hidden;
    g.pos0 = pos0;
    return g;
}

ggml_tensor * AdapterGraphs::shallow_layers(GraphBuilder & b, const StepInputs & in) const {
    return b.layers(model_, model_kv_, b.embed(model_, in.tokens), 0, adapter_.params().exit_layer, in);
}

void AdapterGraphs::draft_step(int32_t token, int pos, float * hidden, float * draft_logits) {
    GraphRun g = shallow_step(DRAFT_STEP, token, pos, Output::Logits);
    g.outputs = {hidden, draft_logits};
    runner_.run(g, [this](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * h = shallow_layers(b, in);     // [n_embd, 1]
        ggml_tensor * z = adapter_.build(b, h, in);  // [n_embd, 1]
        ggml_tensor * logits = b.weight_mul_mat(adapter_.draft_head(), z);  // [draft vocab, 1]
        return GraphOutputs{h, b.named(logits, "result_output", ADAPTER_LAYER)};
    });
}

void AdapterGraphs::bonus_step(int32_t token, int pos, float * hidden) {
    GraphRun g = shallow_step(BONUS_STEP, token, pos, Output::Hidden);
    g.outputs = {hidden};
    runner_.run(g, [this](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * h = shallow_layers(b, in);  // [n_embd, 1]
        adapter_.build_kv(b, h, in);
        return GraphOutputs{h};
    });
}

void AdapterGraphs::write_adapter_kv(const float * hidden, int n, int pos0) {
    runner_.run(adapter_rows(ADAPTER_KV, hidden, n, pos0, Output::Hidden), [this](GraphBuilder & b, const StepInputs & in) {
        adapter_.build_kv(b, in.hidden, in);
        return GraphOutputs{};  // the graph only writes the adapter's K/V
    });
}

void AdapterGraphs::adapter_logits(const float * hidden, int n, int pos0, float * out) {
    GraphRun g = adapter_rows(ADAPTER_LOGITS, hidden, n, pos0, Output::Logits);
    g.outputs = {out};
    runner_.run(g, [this](GraphBuilder & b, const StepInputs & in) {
        ggml_tensor * logits = ggml_mul_mat(b.ctx(), model_.output, adapter_.build(b, in.hidden, in));  // [n_vocab, n]
        return GraphOutputs{b.named(logits, "result_output", ADAPTER_LAYER)};
    });
}

}  // namespace ke
