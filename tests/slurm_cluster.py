"""A real single-node Slurm for tests: ``munged``, ``slurmctld`` and ``slurmd`` started from a generated
``slurm.conf`` (localhost, free ports of its own, state, spool and logs under a temporary folder, four
stand-in GPUs, two partitions ``h100`` (default) and ``h200``), stopped by pid at the end of the session,
at exit and when a test fails. Tests that use it skip with the reason where it cannot start (not root, the
Debian packages ``slurm-wlm``/``munge`` missing, a daemon that does not come up).

Use the ``slurm_cluster`` fixture (``pytest_plugins = ["slurm_cluster"]`` or import it into a test module);
while it is up ``SLURM_CONF`` points at its configuration, so ``sbatch``, ``squeue``, submitit and gpuprobe's
Slurm executor all talk to it.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")
PARTITIONS = ("h100", "h200")
GPUS = 4
CPUS = 8  # more than the machine has (config_overrides): points of a test are light, let them overlap

CONF = """\
ClusterName=gpuprobe-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,defer_batch
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
ReturnToService=2
MessageTimeout=5
SlurmctldTimeout=10
SlurmdTimeout=10
InactiveLimit=0
MinJobAge=2
KillWait=2
Waittime=0
NodeName=localhost CPUs={cpus} RealMemory=4000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=h100 Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=h200 Nodes=localhost MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable_reason() -> str | None:
    """Why this machine cannot run the test Slurm, or None."""
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root, and the tests do not run as root"
    missing = [t for t in DAEMONS + CLIENTS if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        return f"Slurm or munge is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed (pip install 'gpuprobe[slurm]')"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    """A running test cluster: its folder, its ``slurm.conf`` and the daemons' processes."""

    root: Path
    conf: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=self.env)

    def jobs(self) -> list[str]:
        """Every job id in the queue (array tasks one by one)."""
        res = self.run("squeue", "-h", "-r", "-o", "%i")
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    def wait_empty(self, timeout: float = 30) -> list[str]:
        """Wait until the queue is empty; returns what is left."""
        deadline = time.monotonic() + timeout
        left = self.jobs()
        while left and time.monotonic() < deadline:
            time.sleep(0.3)
            left = self.jobs()
        return left

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for p in sorted((self.root / "log").glob("*")):
            text = p.read_text(errors="replace").strip().splitlines()
            out += [f"--- {p.name}"] + text[-lines:]
        return "\n".join(out)

    # -- start and stop --
    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True, cwd=self.root)
        log.close()

    def start(self, timeout: float = 40) -> None:
        r = self.root
        for d in ("munge", "state", "spool", "log", "dev"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        devices = []
        for i in range(GPUS):  # gres needs character devices; the jobs never open them
            dev = r / "dev" / f"nvidia{i}"
            dev.symlink_to("/dev/null")
            devices.append(str(dev))
        self.conf.write_text(CONF.format(root=r, ctld_port=_free_port(), slurmd_port=_free_port(), cpus=CPUS,
                                         gpus=GPUS))
        (r / "gres.conf").write_text(f"AutoDetect=off\nNodeName=localhost Name=gpu File={','.join(devices)}\n")
        m = r / "munge"
        self._start("munged", [_binary("munged"), "-F", "--force", f"--socket={m}/munge.socket",
                               f"--key-file={key}", f"--log-file={m}/munged.log", f"--pid-file={m}/munged.pid",
                               f"--seed-file={m}/munged.seed"])
        deadline = time.monotonic() + timeout
        while not (m / "munge.socket").exists():
            self._check_alive("munged")
            if time.monotonic() > deadline:
                raise RuntimeError("munged did not create its socket")
            time.sleep(0.1)
        self._start("slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._start("slurmd", [_binary("slurmd"), "-D", "-f", str(self.conf)])
        while True:
            self._check_alive("slurmctld")
            self._check_alive("slurmd")
            res = self.run("sinfo", "-h", "-o", "%P %t")
            states = dict(line.split() for line in res.stdout.splitlines() if len(line.split()) == 2)
            if res.returncode == 0 and states and all(s == "idle" for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node did not come up (sinfo: {res.stdout.strip() or res.stderr.strip()})")
            time.sleep(0.3)

    def _check_alive(self, name: str) -> None:
        if self.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited with status {self.procs[name].returncode}")

    def stop(self) -> None:
        """Cancel every job, then end the daemons by pid (SIGTERM, then SIGKILL), then any process left
        that belongs to this cluster (a job step whose files lie under its folder)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--user", str(os.geteuid()), timeout=10)
                self.wait_empty(15)
            except (subprocess.SubprocessError, OSError, AssertionError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in cluster_processes(self.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs.clear()


def cluster_processes(root: Path) -> list[int]:
    """Processes that belong to the cluster in ``root``: their command line or an open file under it."""
    mark = str(root)
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            hit = mark in cmd
            if not hit and "slurmstepd" in cmd:
                hit = any(mark in os.readlink(fd) for fd in (d / "fd").iterdir())
        except OSError:
            continue
        if hit:
            pids.append(int(d.name))
    return pids


_STARTED: list[SlurmCluster] = []


def _stop_all() -> None:
    while _STARTED:
        _STARTED.pop().stop()


atexit.register(_stop_all)


@pytest.fixture(scope="session")
def slurm_cluster(request):
    """The running test Slurm (see the module docstring); skips with the reason where it cannot run."""
    why = unavailable_reason()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="gpuprobe-slurm-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root, root / "slurm.conf")
    _STARTED.append(cluster)
    old = os.environ.get("SLURM_CONF")

    def finish() -> None:
        cluster.stop()
        if cluster in _STARTED:
            _STARTED.remove(cluster)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(root, ignore_errors=True)

    request.addfinalizer(finish)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        tail = cluster.log_tail(5)
        finish()
        pytest.skip(f"the test Slurm did not start: {e}\n{tail}")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    return cluster


@pytest.fixture
def slurm(slurm_cluster):
    """The cluster, with an empty queue before and after each test (a test that leaves a job fails)."""
    assert not slurm_cluster.wait_empty(30), "jobs left in the queue by an earlier test"
    yield slurm_cluster
    left = slurm_cluster.wait_empty(30)
    if left:
        slurm_cluster.run("scancel", *left)
        pytest.fail(f"the test left Slurm jobs behind: {' '.join(left)}")
