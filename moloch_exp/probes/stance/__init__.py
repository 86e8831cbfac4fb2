"""The economic-stance probe (SPEC §3) with its two classifiers: sentence stems continued by the agent,
each continuation read as progressive, conservative or neutral by the judge and by keywords.

    python run.py probe=[economic_stance]
    PYTHONPATH=$PWD python -m pytest tests/probes/test_stance_keywords.py -q

One concern per module:

    data.py      the stems file (Stem, load_stems), checked against the keyword classifier
    keywords.py  the keyword classifier: word boundaries, negation, per-stem direction words
    prompts.py   the LLM classifier's prompt and JSON schema
    stats.py     stance distributions, the classifiers' agreement, the comparison against base
    probe.py     EconomicStanceProbe (economic_stance): samples, classifies, summarises
    results.py   StanceProbeResult: table rows in summary.md
"""
