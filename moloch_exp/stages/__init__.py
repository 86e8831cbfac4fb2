"""The stages of an experiment cell, one unit per module (see docs/architecture.md):

    prepare   anchors_{train,test}.jsonl, source.json
    collect   candidates.jsonl, votes.jsonl, collection_stats.json
    build     train_examples.jsonl, build_stats.json
    train     adapter/ (+ checkpoint-<step>/), train_metrics.json
    generate  outputs.jsonl
    evaluate  votes.jsonl, summary.json
    probe     judgments.jsonl, summary.json (+ samples.jsonl for model probes)
    trend     model-probe stages on every checkpoint → TrendResult
    reliability  retest_votes.jsonl, reliability.json (position bias, voters' alpha, test-retest of a vote set)
    controls  judgments.jsonl (the judge on a probe's bundled judge controls)

Each module has ``material(...)`` (its stage-cache key material, built from the components'
``identity()`` and the keys of its input artifacts) and ``run(env, ...)`` with explicit inputs,
returning an artifact with readers (``Prepared.anchors(split)``, ``Generated.outputs()``, ...).
``cell.Cell`` wires them for one cell; a multi-round or DPO orchestrator can call them with other
inputs (e.g. collect with a trained adapter). Artifacts live in ``<cache_dir>/stages/<stage>/<key>/``
and are linked into ``<output_dir>/stages/<label>/``.
"""
