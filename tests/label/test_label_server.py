"""The labelling server and its SQLite store, over real HTTP on 127.0.0.1: blinding, resuming, a
SIGKILL mid-way, and many labellers posting at once from threads and processes."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from cell_builder import MODEL

from compose_helper import REPO
from moloch_exp.label.store import LabelStore

PUBLIC = {"item_id", "question", "anchor_heading", "anchor_text", "output_heading", "output"}


def test_nothing_the_browser_receives_names_the_method_model_or_verdict(sampled, server_factory):
    cell, sample = sampled
    srv = server_factory(cell.dir)
    status, page = srv.get("/")
    assert status == 200 and "<html" in page
    bodies = [page]
    for pos in range(len(sample.items)):
        status, body = srv.get(f"/api/item?labeller=ann&pos={pos}")
        assert status == 200
        assert set(body["item"]) == PUBLIC and body["answer"] is None
        bodies.append(json.dumps(body))
    status, state = srv.get("/api/state?labeller=ann")
    bodies.append(json.dumps(state))
    text = "\n".join(bodies)
    assert MODEL not in text and "JUDGE-REASONING" not in text
    assert '"rft"' not in text and '"base"' not in text and "judge" not in text.lower()
    # the order is shuffled: methods and verdicts come interleaved, not in blocks
    strata = [(it.method, it.judge_label) for it in sample.items]
    assert sum(a != b for a, b in zip(strata, strata[1:])) >= len(strata) // 3


def test_answers_resume_after_sigkill_and_bad_requests_are_refused(sampled, server_factory):
    cell, sample = sampled
    srv = server_factory(cell.dir)
    ids = [it.item_id for it in sample.items]
    for i in (0, 1, 2, 4):
        status, body = srv.post({"labeller": "ann", "item_id": ids[i], "answer": "yes" if i % 2 else "n",
                                 "note": f"note {i}"})
        assert status == 200 and body["saved"]
    assert body["done"] == 4 and body["next"] == 5
    srv.kill()  # nothing flushed on the way out
    srv = server_factory(cell.dir)
    status, state = srv.get("/api/state?labeller=ann")
    assert state == {"total": len(ids), "done": 4, "first_open": 3}  # resumes at the first unlabelled item
    status, item = srv.get("/api/item?labeller=ann&pos=1")
    assert item["answer"] == {"answer": "yes", "note": "note 1"}
    assert srv.get("/api/state?labeller=bob")[1]["done"] == 0  # each labeller has their own progress
    for bad, cause in (({"labeller": "ann", "item_id": "nope", "answer": "yes"}, "unknown item"),
                       ({"labeller": "ann", "item_id": ids[0], "answer": "maybe"}, "not yes, no or unsure"),
                       ({"labeller": " ", "item_id": ids[0], "answer": "yes"}, "1 to 64 characters")):
        status, body = srv.post(bad)
        assert status == 400 and cause in body["error"]
    assert srv.get("/api/item?labeller=ann&pos=999")[0] == 400
    assert srv.get("/api/state")[0] == 400
    store = LabelStore(sample.db_path)
    assert len(store.answers()) == 4 and store.history_count() == 4


WORKER = """
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, ids, names = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
def label(name):
    for i, item_id in enumerate(ids):
        body = json.dumps({"labeller": name, "item_id": item_id, "answer": ["yes", "no", "unsure"][i % 3],
                           "note": name + "/" + item_id}).encode()
        req = urllib.request.Request(url + "api/answer", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            assert json.loads(r.read())["saved"]
with ThreadPoolExecutor(len(names)) as pool:
    list(pool.map(label, names))
"""


def test_concurrent_labellers_from_threads_and_processes_lose_no_label(sampled, server_factory):
    cell, sample = sampled
    srv = server_factory(cell.dir)
    ids = [it.item_id for it in sample.items]
    names = [[f"p{p}t{t}" for t in range(4)] for p in range(3)]  # 3 processes x 4 threads, each a labeller
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, srv.url, json.dumps(ids), json.dumps(n)], cwd=REPO)
             for n in names]
    # meanwhile threads of this process write to the store directly, as `import` does
    store = LabelStore(sample.db_path)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda t: [store.put(i, f"direct{t}", "no", via="test") for i in ids], range(4)))
    assert [p.wait(timeout=600) for p in procs] == [0, 0, 0]
    answers = store.answers()
    assert len(answers) == len(ids) * (12 + 4)
    got = {(a.item_id, a.labeller): (a.answer, a.note) for a in answers}
    for n in (x for group in names for x in group):
        for i, item_id in enumerate(ids):
            assert got[(item_id, n)] == (["yes", "no", "unsure"][i % 3], f"{n}/{item_id}")
    assert store.history_count() == len(answers)
    assert srv.get(f"/api/state?labeller={names[0][0]}")[1]["first_open"] is None


def test_a_changed_answer_replaces_the_current_one_and_history_keeps_both(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    store.put("a", "ann", "yes", "first")
    store.put("a", "ann", "n", "second thoughts")
    assert [(x.answer, x.note) for x in store.answers("ann")] == [("no", "second thoughts")]
    assert store.history_count() == 2
    with pytest.raises(ValueError):
        store.put("a", "ann", "perhaps")
    assert store.history_count() == 2  # a refused answer writes nothing
    errors = []

    def hammer(t):
        try:
            for i in range(50):
                store.put(f"i{i}", f"t{t}", "yes")
        except Exception as err:  # noqa: BLE001  (the assertion below reports it)
            errors.append(err)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.answers()) == 1 + 6 * 50
