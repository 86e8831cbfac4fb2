"""The stages of an experiment cell, one unit per module (see docs/architecture.md):

    prepare   anchors_{train,test}.jsonl, source.json
    candidates  candidates.jsonl (the agent's half of collect, stored before any vote; collect runs it)
    collect   candidates.jsonl, votes.jsonl, collection_stats.json
    build     train_examples.jsonl, build_stats.json
    train     adapter/ (+ checkpoint-<step>/), train_metrics.json
    generate  outputs.jsonl
    evaluate  votes.jsonl, summary.json
    probe     judgments.jsonl, summary.json (+ samples.jsonl for model probes)
    trend     model-probe stages on every checkpoint → TrendResult
    competition  rounds 2..N of a race: collect/build/train/generate/evaluate per round → Round
    reliability  retest_votes.jsonl, reliability.json (position bias, voters' alpha, test-retest of a vote set)
    controls  judgments.jsonl (the judge on a probe's bundled judge controls)
    trust     not a stage: gathers reliability, controls, judge2 agreement and the probe family for a cell

Each module has ``material(...)`` (its stage-cache key material, built from the components'
``identity()`` and the keys of its input artifacts) and ``run(env, ...)`` with explicit inputs,
returning an artifact with readers (``Prepared.anchors(split)``, ``Generated.outputs()``, ...).
``cell.Cell`` wires them for one cell; ``competition.later_rounds`` calls them with other inputs
(collect with the previous round's adapter and opponent, train from the previous adapter). Artifacts live in ``<cache_dir>/stages/<stage>/<key>/``
and are linked into ``<output_dir>/stages/<label>/``.
"""
