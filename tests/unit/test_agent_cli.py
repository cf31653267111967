"""``calinode ask --agent`` for a person: one line a step (tool, arguments, hits, characters
or the error), then the answer with numbered sources and the bound that stopped the loop."""

from __future__ import annotations

from calinode.node.cli.rag import agent_text, step_line


def test_step_lines() -> None:
    assert step_line({"step": 1, "tool": "search", "args": {"query": "wing lift"},
                      "hits": 3}) == 'step 1: search "wing lift" -> 3 hits'
    assert step_line({"step": 2, "tool": "fetch", "args": {"doc_id": "12"},
                      "chars": 1500}) == "step 2: fetch '12' -> 1500 characters"
    assert step_line({"step": 3, "tool": "search", "args": {"query": "wing lift"},
                      "error": "repeated call", "repeated": True}
                     ) == 'step 3: search "wing lift" -> error: repeated call'
    assert step_line({"step": 4, "tool": "invalid", "args": {},
                      "error": "the reply is not one JSON object"}
                     ) == "step 4: invalid  -> error: the reply is not one JSON object"
    long = step_line({"step": 5, "tool": "search", "args": {"query": "x" * 1000}, "hits": 1})
    assert len(long) == 300


def test_answer_text() -> None:
    data = {"answer": "The slipstream raises the lift.", "bound": "steps",
            "sources": [{"n": 1, "doc_id": "1", "title": "a wing in a slipstream"},
                        {"n": 2, "doc_id": "7", "title": None}]}
    assert agent_text(data) == ("The slipstream raises the lift.\n\nsources:\n"
                                "  [1] 1 a wing in a slipstream\n  [2] 7\n"
                                "(stopped by the steps bound: answered from what it had)")
    assert agent_text({"answer": "No.", "bound": None, "sources": []}) == (
        "No.\n\nsources:\n  none")
