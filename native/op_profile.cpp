#include "op_profile.h"

#include "clock.h"
#include "ggml.h"

namespace ke {

namespace {

std::string kind_of(const ggml_tensor * t) {
    std::string kind = ggml_op_desc(t);
    const bool product = t->op == GGML_OP_MUL_MAT || t->op == GGML_OP_CUSTOM;  // ours are custom ops
    if (product && t->src[0]) {
        // a view is the K/V cache (attention's q.k and p.v); weights are tensors of their own
        kind += std::string(" ") + ggml_type_name(t->src[0]->type) + (t->src[0]->view_src ? " (cache)" : "");
    }
    return kind;
}

}  // namespace

void OpProfile::attach(ggml_backend_sched_t sched, bool on) {
    ggml_backend_sched_set_eval_callback(sched, on ? &OpProfile::observe : nullptr, on ? this : nullptr);
}

// ask: the scheduler asks whether to stop after node t (always: each node is timed alone); then
// it computes the nodes up to t and calls again with ask false.
bool OpProfile::observe(ggml_tensor * t, bool ask, void * self) {
    OpProfile & p = *static_cast<OpProfile *>(self);
    const double now = now_seconds();
    if (ask) {
        p.node_start_ = now;
        return true;
    }
    for (OpTime * o : {&p.by_kind_[kind_of(t)], &p.by_name_[t->name]}) {
        o->count += 1;
        o->seconds += now - p.node_start_;
    }
    return true;
}

}  // namespace ke
