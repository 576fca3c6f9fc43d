"""Test aids shipped with the package, shared by the tests, the benchmarks and the scripts.

- ``aio``: ``run_async`` (an async test in a fresh loop, with a deadline) and ``wait_for``.
- ``records``: a new group's signed advert (``make_advert``) and ways to break one.
- ``loopback``: DHT swarms and full learning nodes on 127.0.0.1 in one event loop.
- ``procs``: node processes whose output is read with deadlines, stopped by PID.
- ``netns``: a LAN of network-namespace hosts (root), with cut links and partitions.
- ``chaos``: the chaos run (kills, stops, cuts, partitions; invariants checked throughout).
- ``hostile``: hostile DHT peers; ``traffic``: hostile traffic; ``flood``: advert floods.

Nothing here is imported by the node itself.
"""
