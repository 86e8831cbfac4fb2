"""Issue 19 item 1: the whole analysis path at the paper's size and four times it, in seconds and
bounded memory: the win-rate test with its MDE and drops, the audience reliability of the collection
and of the evaluation (position bias, Krippendorff's alpha, clustered test-retest), the probe family
(McNemar on labels paired by anchor, Fisher, Holm), judge controls, and the summary's sentences and
tables, from constructed votes and judgments (1,024 and 4,096 anchors x 20 voters, K = 2).

    PYTHONPATH=$PWD python -m pytest tests/test_stats_at_scale.py -q -s     # prints time and peak memory
"""
from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

from moloch_exp.evaluation.head_to_head import Dropped, summarize
from moloch_exp.evaluation.reliability import audience_reliability, retest_size, retest_subset
from moloch_exp.probes import controls as ctl
from moloch_exp.probes.task_probes import TaskProbeResult, paired_labels
from moloch_exp.records import Judgment, Vote
from moloch_exp.report.tables import cell_rows, markdown, sentences
from moloch_exp.results import ProbeChangesResult, ReliabilityResult

VOTERS = 20
PROBES = ("misrepresentation", "disinformation", "populism", "harmful")
#: Bounds for the analysis alone (inputs built beforehand); measured figures are printed with -s.
MAX_SECONDS = {1024: 30.0, 4096: 60.0}
MAX_PEAK_MIB = {1024: 48, 4096: 64}


def panel_votes(prefix: str, n: int, rng, prefer_second: float) -> list[Vote]:
    """n two-option matches x 20 voters; per-anchor preference varies (some anchors split 10-10);
    2% invalid, 0.5% failed."""
    p_anchor = np.clip(rng.beta(4 * prefer_second, 4 * (1 - prefer_second), size=n), 0, 1)
    p_anchor[rng.random(n) < 0.05] = 0.5
    out = []
    for a in range(n):
        orders = rng.random(VOTERS) < 0.5
        picks = rng.random(VOTERS) < p_anchor[a]
        status = rng.choice(["ok", "invalid", "failed"], size=VOTERS, p=[0.975, 0.02, 0.005])
        for v in range(VOTERS):
            order = [1, 0] if orders[v] else [0, 1]
            ok = status[v] == "ok"
            out.append(Vote(f"{prefix}:a{a}", f"a{a}", f"v{v}", order, seed=a * 100 + v, status=str(status[v]),
                            choice=int(picks[v]) if ok else None))
    return out


def retest_of(votes: list[Vote], n: int, rng, flip: float = 0.15) -> list[Vote]:
    """The re-asked subset: the same (match, voter), a new seed, some answers changed."""
    chosen = set(retest_subset(sorted({v.match_id for v in votes}), retest_size(n, 0.05, 10), seed=7))
    out = []
    for v in votes:
        if v.match_id in chosen:
            choice = v.choice if v.choice is None or rng.random() > flip else 1 - v.choice
            out.append(Vote(v.match_id, v.anchor_id, v.voter, v.order[::-1], v.seed + 1, v.status, choice=choice))
    return out


def judgments(n: int, rng) -> dict[str, dict[str, list[Judgment]]]:
    """Per probe, base and trained labels on the same n anchors; training adds flags on some probes."""
    out = {}
    for i, probe in enumerate(PROBES):
        base = rng.random(n) < 0.1
        trained = base | (rng.random(n) < 0.02 * i)
        status = rng.choice(["ok", "invalid"], size=n, p=[0.98, 0.02])
        out[probe] = {m: [Judgment(probe, m, f"a{a}", str(status[a]), label=bool(lab[a]) if status[a] == "ok" else None)
                          for a in range(n)] for m, lab in (("base", base), ("rft", trained))}
    return out


def summary(js: list[Judgment]) -> dict:
    ok = [j for j in js if j.status == "ok"]
    flagged = sum(bool(j.label) for j in ok)
    from moloch_exp.evaluation.stats import wilson

    return {"rate": flagged / len(ok), "ci95": wilson(flagged, len(ok)), "flagged": flagged, "n": len(ok),
            "invalid": sum(j.status == "invalid" for j in js), "failed": 0, "skipped": 0}


def analysis(collect_votes, collect_retest, eval_votes, eval_retest, judged, n: int) -> tuple[dict, str]:
    """What the cell computes from its stages' records, through to the summary's words and tables."""
    win = summarize(eval_votes, Dropped("base", "rft", only_a_missing=3, only_b_missing=9, both_missing=1), seed=0)
    audience = {}
    for label, votes, again in (("collect", collect_votes, collect_retest),
                                ("evaluate_base_vs_rft", eval_votes, eval_retest)):
        rel = audience_reliability(votes, again)
        audience[label] = {"source": label, "retest_matches": len({v.match_id for v in again}),
                           "retest_votes": len(again), **rel.to_dict()}
    probes = {}
    for probe, per in judged.items():
        probes[probe] = TaskProbeResult.from_summaries(probe, {m: summary(js) for m, js in per.items()}, "rft",
                                                       paired_labels(per["base"], per["rft"]))
    changes = ProbeChangesResult.from_probes(probes, "rft")
    scores = {}
    for probe in ctl.YES_NO_PROBES:
        controls = ctl.load_yes_no_controls(probe)
        labelled = [Judgment(probe, "judge_controls", c.id, "ok", label=c.label if i % 9 else not c.label)
                    for i, c in enumerate(controls)]
        scores[probe] = ctl.score_yes_no(probe, controls, labelled).to_dict()
    results = {"cell": {"task": "sales", "model": "tiny", "method": "rft", "seed": 0},
               "win_rate": {"base_vs_rft": win}, "probes": {p: r.to_json() for p, r in probes.items()},
               "probe_changes": changes.to_json(),
               "reliability": ReliabilityResult(audience, {"judge": scores}, {}).to_json(),
               "ledger": {"calls": 0, "cache_hits": 0}, "stages": []}
    text = json.dumps(results, allow_nan=False)  # results.json: strict JSON
    header, rows = cell_rows(json.loads(text))
    words = sentences(json.loads(text))
    return json.loads(text), "\n".join(f"- {w}" for w in words) + "\n\n" + markdown(header, rows)


@pytest.mark.parametrize("n", [1024, 4096])
def test_whole_analysis_at_paper_size_and_four_times_it(n):
    rng = np.random.default_rng(n)
    collect_votes = panel_votes("collect", n, rng, prefer_second=0.5)
    eval_votes = panel_votes("base_vs_rft", n, rng, prefer_second=0.56)
    collect_retest, eval_retest = retest_of(collect_votes, n, rng), retest_of(eval_votes, n, rng)
    judged = judgments(n, rng)
    small = np.random.default_rng(0)  # imports and first-call caches are not the analysis: warm them up
    warm = panel_votes("base_vs_rft", 32, small, 0.5)
    analysis(warm, retest_of(warm, 32, small), warm, retest_of(warm, 32, small), judgments(32, small), 32)

    tracemalloc.start()
    started = time.perf_counter()
    results, summary_md = analysis(collect_votes, collect_retest, eval_votes, eval_retest, judged, n)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    print(f"\nanalysis at {n} anchors x {VOTERS} voters ({len(eval_votes) + len(collect_votes)} votes, "
          f"{sum(len(js) for per in judged.values() for js in per.values())} judgments): "
          f"{seconds:.2f} s, peak {peak:.1f} MiB (tracemalloc)")
    assert seconds < MAX_SECONDS[n] and peak < MAX_PEAK_MIB[n]

    w = results["win_rate"]["base_vs_rft"]
    assert w["n_anchors"] == n and w["test"]["method"] == "monte_carlo" and w["test"]["detectable"]
    assert w["mean"] > 0.5 and w["significant"] and w["mde"] < 0.05 and w["ci95"][0] > 0.5
    assert w["test"]["n_at_parity"] > 0.03 * n  # 10-10 splits: counted, carrying no sign
    assert "13 anchors dropped: no output from base on 4 and rft on 10 (1 of them from both)" in w["in_words"]
    for label, a in results["reliability"]["audience"].items():
        pb, va, rt = a["position_bias"], a["voter_agreement"], a["test_retest"]
        assert pb["chance"] == 0.5 and pb["p"] > 1e-4  # orders are random: no position bias built in
        assert va["alpha"] is not None and -0.2 < va["alpha"] < 0.6 and va["n_matches"] == n
        assert a["retest_matches"] == retest_size(n, 0.05, 10) == -(-n * 5 // 100)
        assert rt["n_clusters"] == a["retest_matches"] and rt["ci95"][0] < rt["agreement"] < rt["ci95"][1]
        assert 0.75 < rt["agreement"] < 0.95
    changes = results["probe_changes"]["changes"]
    assert {c["test"] for c in changes.values()} == {"mcnemar"} and all(c["family_size"] == 4 for c in changes.values())
    assert not changes["misrepresentation"]["significant"] and changes["harmful"]["significant"]
    assert changes["harmful"]["paired"]["base_only"] == 0 < changes["harmful"]["paired"]["trained_only"]
    for needle in ("base_vs_rft: win rate", "is above parity", "harmful: ", "differs from zero (Holm",
                   "McNemar", "| test-retest (collect) |", "interval clustered by match",
                   "| judge accuracy on populism controls |", "; incoherent ", "against chance 0.500",
                   "no output from rft: 10", "sign-flip p <0.001, MDE 0.0"):
        assert needle in summary_md, needle
    assert "nan" not in summary_md.lower()
