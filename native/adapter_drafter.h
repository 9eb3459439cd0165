// Kangaroo's drafter: the newest token through layers [0, N) (whose K/V are the full model's own
// for those layers), then the adapter and the draft head; repeat on the draft. Its drafts carry
// their inputs' exit-layer states, so verification only runs the deep layers.
#pragma once

#include "adapter.h"
#include "adapter_graphs.h"
#include "calibration.h"
#include "exit_layer_drafter.h"

namespace ke {

class AdapterDrafter : public ExitLayerDrafter {
public:
    AdapterDrafter(const Model & model, Runner & runner, KvCache & model_kv, Adapter & adapter);
    const char * name() const override { return "adapter"; }
    Draft draft(const DraftRequest & r, const KeepDrafting & keep_drafting) override;
    double acceptance(float confidence) const override { return calibration_.predict(confidence); }
    void record_outcome(float confidence, bool accepted) override { calibration_.record(confidence, accepted); }
    bool confident(float confidence, float tau) const override { return confidence >= tau; }
    CalibrationTable calibration_table() const override { return calibration_.table(); }

    // the exit-layer hooks
    int exit_layer() const override { return adapter_.params().exit_layer; }
    void add_bonus_row(const DraftRequest & r, Draft & d) override;
    void prefill(const float * hidden, int n, int pos0) override;
    void record(GraphBuilder & b, ggml_tensor * hidden, const StepInputs & in) override;
    const KvCache & state() const override { return adapter_.kv(); }

    // The adapter's logits [n, n_vocab] for exit-layer states [n, n_embd] at pos0.. (for checks).
    void logits(const float * hidden, int n, int pos0, float * out);

private:
    const Model & model_;
    Adapter & adapter_;
    AdapterGraphs graphs_;
    BinnedCalibration calibration_;  // over the adapter's top-1 probability
    std::vector<float> logits_;  // [draft vocab] of the last draft step
};

}  // namespace ke
