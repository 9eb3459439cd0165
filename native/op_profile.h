// Where a step's time goes, per kind of ggml node: a diagnostic for benchmarks/step_profile.py.
// While profiling is on, the scheduler runs every node as a graph computation of its own (its
// evaluation callback asks for each), so a node's time includes one launch of the CPU backend's
// threads; nodes that compute nothing (views, reshapes) measure that launch alone.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "ggml-backend.h"

namespace ke {

struct OpTime {
    int64_t count = 0;
    double seconds = 0.0;
};

class OpProfile {
public:
    // Installs the callback on `sched` for its next computation (null: removes it).
    void attach(ggml_backend_sched_t sched, bool on);
    void clear() { by_kind_.clear(); by_name_.clear(); graphs_ = 0; }
    void count_graph() { ++graphs_; }
    // keyed by op name, and for matrix products by the weight's type ("MUL_MAT q4_1"), or the
    // cache's when it multiplies by the K/V cache ("MUL_MAT f16 (cache)")
    const std::map<std::string, OpTime> & by_kind() const { return by_kind_; }
    // keyed by the node's name (GraphBuilder::named: "attn_norm-3", "ffn_out-29", "result_output")
    const std::map<std::string, OpTime> & by_name() const { return by_name_; }
    int64_t graphs() const { return graphs_; }

private:
    static bool observe(ggml_tensor * t, bool ask, void * self);

    std::map<std::string, OpTime> by_kind_;
    std::map<std::string, OpTime> by_name_;
    int64_t graphs_ = 0;
    double node_start_ = 0.0;
};

}  // namespace ke
