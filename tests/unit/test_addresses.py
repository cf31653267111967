from calinode.node.p2p.addresses import expand_wildcards, interface_ipv4_addresses, order_addresses


def test_expand_wildcards_replaces_any_address() -> None:
    addrs = ["/ip4/0.0.0.0/tcp/7411/p2p/Q", "/ip4/10.0.0.2/tcp/7411/p2p/Q"]
    expanded = expand_wildcards(addrs, ["192.168.1.5", "127.0.0.1"])
    assert expanded == [
        "/ip4/192.168.1.5/tcp/7411/p2p/Q",
        "/ip4/127.0.0.1/tcp/7411/p2p/Q",
        "/ip4/10.0.0.2/tcp/7411/p2p/Q",
    ]


def test_loopback_goes_last_and_duplicates_go() -> None:
    assert order_addresses(["127.0.0.1", "10.1.1.1", "10.1.1.1"]) == ["10.1.1.1", "127.0.0.1"]


def test_interfaces_include_loopback() -> None:
    ips = interface_ipv4_addresses()
    assert "127.0.0.1" in ips and ips[-1].startswith("127.")
