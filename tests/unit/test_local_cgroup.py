"""The local backend's cgroup per cluster: reading the cgroup mounts and membership (pure)."""

from __future__ import annotations

from airflow_provider_flyray.backends.local_cgroup import (
    V1_PIDS,
    V2,
    cgroup_mounts,
    is_cluster_cgroup,
    join_command,
    own_cgroup,
)

# This machine's (a hybrid layout: v1 controllers, and the v2 hierarchy at .../unified).
HYBRID = """\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpu,cpuacct
"""
V2_ONLY = "29 24 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
PROC_CGROUP = "8:pids:/airflow\n4:memory:/x\n1:name=systemd:/\n0::/system.slice/airflow-worker.service\n"


def test_mounts_of_both_hierarchies_are_found():
    assert cgroup_mounts(HYBRID) == {V2: "/sys/fs/cgroup/unified", V1_PIDS: "/sys/fs/cgroup/pids"}
    assert cgroup_mounts(V2_ONLY) == {V2: "/sys/fs/cgroup"}
    assert cgroup_mounts("garbage\n\n") == {}


def test_own_cgroup_per_hierarchy():
    assert own_cgroup(PROC_CGROUP, V2) == "/system.slice/airflow-worker.service"
    assert own_cgroup(PROC_CGROUP, V1_PIDS) == "/airflow"
    assert own_cgroup("4:memory:/x\n", V1_PIDS) is None


def test_only_the_providers_own_cgroups_are_ever_killed():
    # The path comes from trigger kwargs in the metadata DB: nothing else may be written to.
    mounts = cgroup_mounts(HYBRID)
    assert is_cluster_cgroup("/sys/fs/cgroup/unified/flyray-t-1a2b3c4d", mounts) == V2
    assert is_cluster_cgroup("/sys/fs/cgroup/pids/airflow/flyray-t-1a2b3c4d", mounts) == V1_PIDS
    assert is_cluster_cgroup("/sys/fs/cgroup/unified/system.slice", mounts) is None
    assert is_cluster_cgroup("/sys/fs/cgroup/unified/flyray-x/../system.slice", mounts) is None
    assert is_cluster_cgroup("/tmp/flyray-x", mounts) is None


def test_the_head_joins_its_cgroup_before_it_execs():
    command = join_command("/cg/flyray-x/cgroup.procs", ["ray", "start", "--head"])
    assert command[:2] == ["/bin/sh", "-c"] and "exec" in command[2]
    assert command[3:] == ["/cg/flyray-x/cgroup.procs", "ray", "start", "--head"]
