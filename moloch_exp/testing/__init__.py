"""Test-only helpers shipped with the package so that tests, benches and a separate process can use them.

Nothing in the library imports this package at run time: it holds the loopback fake of a hosted
OpenAI API (:mod:`moloch_exp.testing.fake_openai`), the stand-in for what cannot be reached here, and
the paper-size cell that tests/test_paper_scale_e2e.py and bench/paper_scale.py run against it
(:mod:`moloch_exp.testing.paper_cell`).
"""
