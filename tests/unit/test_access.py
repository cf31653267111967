from __future__ import annotations

from calinode.node.access import AccessPolicy
from calinode.protocol.collections import CollectionDef

DEF = CollectionDef(name="papers", model="m", model_sha256="0" * 64, dim=4, pooling="mean",
                    normalize=True, owner="pown", admins=("padm",), writers=("pwri",),
                    readers=("prea",))


def test_in_a_private_swarm_every_member_may_everything() -> None:
    rules = AccessPolicy(self_id="pme", private=True)
    assert rules.may_write("pstr", DEF) and rules.may_read("pstr", DEF)
    assert rules.may_send_data("pstr") and rules.may_own("pstr")


def test_in_an_open_swarm_the_lists_decide() -> None:
    rules = AccessPolicy(self_id="pme", private=False, trusted=frozenset({"pfri"}))
    for peer in ("pown", "padm", "pwri"):
        assert rules.may_write(peer, DEF) and rules.may_read(peer, DEF)
    assert not rules.may_write("prea", DEF) and rules.may_read("prea", DEF)
    assert not rules.may_read("pstr", DEF) and not rules.may_write("pstr", DEF)
    assert rules.may_write("pme", DEF)  # this node serves itself
    # documents and prompts: to trusted peers, or to a collection's members for its work
    assert rules.may_send_data("pfri") and not rules.may_send_data("pstr")
    assert rules.may_send_data("prea", DEF) and not rules.may_send_data("prea")
    assert rules.may_own("pfri") and rules.may_own("pme") and not rules.may_own("pown")
