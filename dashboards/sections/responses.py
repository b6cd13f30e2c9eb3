"""Layer responses (Fig. 7): the std of each 3×3 layer's response, plain vs residual."""

from __future__ import annotations

from dashboards import figures, probes
from dashboards.html import escape, figure, section
from dashboards.loader import ExperimentData
from dashboards.stats import comparison_runs


def render(data: ExperimentData) -> str:
    members = comparison_runs(data.runs)
    kept, dropped = probes.three_by_three(data.responses, data.runs)
    have = kept[kept["run_id"].isin(members["run_id"])]
    names = dict(zip(data.runs["run_id"], data.runs["name"]))
    outcomes = dict(zip(data.runs["run_id"], data.runs["outcome"]))

    def described(run_id: str) -> str:  # a failed or diverged run says so: that is usually why it has no probes
        name, outcome = escape(names.get(run_id, run_id)), outcomes.get(run_id)
        return name if outcome == "completed" else f"{name} ({escape(outcome)})"

    missing = [described(r) for r in data.missing_probes]
    lacking = (f'<p class="note missing-probes">No layer-response data (<code>probes/layer_response_std.json</code>) '
               f'for {len(missing)} run(s): {"; ".join(missing)}.</p>') if missing else ""
    if data.unreadable_probes:  # the store failed: not the same as a run that never wrote its probes
        reasons = "; ".join(f"{described(r)}: {escape(why)}" for r, why in data.unreadable_probes.items())
        lacking += (f'<p class="note unreadable-probes">The layer-response data of {len(data.unreadable_probes)} '
                    f'run(s) could not be read from the store: {reasons}.</p>')
    if have.empty:
        return section("responses", "Layer responses (Fig. 7)", lacking,
                        '<p class="note">No layer-response data for the compared runs.</p>')
    probe = probes.describe_probe(have, dropped[dropped["run_id"].isin(members["run_id"])], members)
    what = (f'<ul class="probe" id="probe-description"><li><b>Measures:</b> {escape(probe.mode)}.</li>'
            f'<li><b>Layers:</b> {escape(probe.layers)}.</li><li><b>Images:</b> {escape(probe.images)}.</li>'
            f'<li><b>When:</b> {escape(probe.iteration)}; lines are the mean over each net\'s runs. Plain nets dotted, '
            f'ResNets solid.</li>'
            + (f'<li><b>Left out:</b> {escape(probe.dropped)}</li>' if probe.dropped else "")
            + '</ul><p class="note">The paper (Fig. 7) measures on CIFAR-10 after BN and before the ReLU / '
              'addition, but does not say which images or which BN mode (train or eval); the images and the eval '
              'mode are this project\'s choices.</p>')
    return section("responses", "Layer responses (Fig. 7)", what, lacking,
                    figure(figures.layer_responses(have, data.runs), "fig-responses"))
