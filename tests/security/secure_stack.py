"""A broker and a Redis that really demand credentials and TLS, for the security tests.

:class:`SecureKafka`: a single-node KRaft broker (the same Maven jars as ``ama-stream local
up``) whose client listener is SASL_SSL with SCRAM-SHA-512 only; the broker's certificate is
signed by a CA made at start-up with the JDK's keytool, the SCRAM users are created when the
log directory is formatted (``kafka-storage format --add-scram``). The broker talks to itself
over a second, PLAINTEXT listener that no test uses. A second CA, never trusted by the broker's
clients, makes the "untrusted certificate" case.

:class:`SecureRedis`: redis-server with ``requirepass`` off for ``default`` (disabled), one ACL
user per job as docs/worker.md prescribes, and optionally TLS on its only port, with a
certificate signed by the same CA (exported as PEM for Python's ssl module with openssl-free
``keytool -exportcert -rfc`` for certificates, the key taken out of its PKCS#12 store by
openssl).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import free_ports

from streamer.devtools.local_stack import KAFKA_LOG4J, LocalStack, default_state_dir

PASSWORD = "s3cret-Sasl-pw-1"  # the SCRAM user's password (and the Redis ACL users')
USER = "ama"
_STORE_PW = "changeit-123"
READY_S = 120.0


def _keytool(*args: str, cwd: Path) -> None:
    keytool = shutil.which("keytool")
    assert keytool, "keytool (the JDK's) is needed for the secure broker's certificates"
    done = subprocess.run([keytool, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def make_pki(folder: Path) -> None:
    """ca.pem (trusted by the clients), other-ca.pem (trusted by nobody), broker.p12 (the key
    and chain for 127.0.0.1 / localhost) and broker.pem (its certificate)."""
    folder.mkdir(parents=True, exist_ok=True)
    common = ["-storetype", "PKCS12", "-storepass", _STORE_PW, "-keyalg", "RSA", "-keysize",
              "2048", "-validity", "3"]  # fmt: skip
    san = "SAN=ip:127.0.0.1,dns:localhost"
    for ca in ("ca", "other-ca"):
        _keytool("-genkeypair", "-alias", ca, "-dname", f"CN=ama-test-{ca}", "-ext", "bc:c",
                 "-keystore", f"{ca}.p12", *common, cwd=folder)  # fmt: skip
        _keytool("-exportcert", "-alias", ca, "-rfc", "-file", f"{ca}.pem", "-keystore",
                 f"{ca}.p12", "-storepass", _STORE_PW, cwd=folder)  # fmt: skip
    _keytool("-genkeypair", "-alias", "broker", "-dname", "CN=localhost", "-ext", san,
             "-keystore", "broker.p12", *common, cwd=folder)  # fmt: skip
    _keytool("-certreq", "-alias", "broker", "-keystore", "broker.p12", "-storepass", _STORE_PW,
             "-file", "broker.csr", cwd=folder)  # fmt: skip
    _keytool("-gencert", "-alias", "ca", "-keystore", "ca.p12", "-storepass", _STORE_PW,
             "-infile", "broker.csr", "-outfile", "broker.pem", "-ext", san, "-rfc",
             "-validity", "3", cwd=folder)  # fmt: skip
    _keytool("-importcert", "-alias", "ca", "-file", "ca.pem", "-keystore", "broker.p12",
             "-storepass", _STORE_PW, "-noprompt", cwd=folder)  # fmt: skip
    _keytool("-importcert", "-alias", "broker", "-file", "broker.pem", "-keystore", "broker.p12",
             "-storepass", _STORE_PW, cwd=folder)  # fmt: skip


_BROKER = """
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal}
listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
ssl.keystore.type=PKCS12
ssl.keystore.location={pki}/broker.p12
ssl.keystore.password={store_pw}
ssl.key.password={store_pw}
log.dirs={data}
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
offsets.topic.num.partitions=2
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=2
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
"""


@dataclass
class SecureKafka:
    """The SASL_SSL broker; :meth:`start` and :meth:`stop` bracket a test session."""

    folder: Path

    def __post_init__(self) -> None:
        self.port, self.internal, self.controller = free_ports(3)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.pki = self.folder / "pki"
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self, *, password: str = PASSWORD, ca: str = "ca.pem") -> dict[str, str]:
        """The documented settings (docs/operations.md, "Security") as AMA_* variables."""
        return {
            "AMA_KAFKA__BOOTSTRAP": self.bootstrap,
            "AMA_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "AMA_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "AMA_KAFKA__SASL_USERNAME": USER,
            "AMA_KAFKA__SASL_PASSWORD": password,
            "AMA_KAFKA__SSL_CAFILE": str(self.pki / ca),
        }

    def client_config(self) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": USER,
            "sasl.password": PASSWORD,
            "ssl.ca.location": str(self.pki / "ca.pem"),
        }

    def start(self) -> None:
        make_pki(self.pki)
        java = shutil.which("java")
        assert java, "java is needed for the secure broker"
        classpath = LocalStack(default_state_dir())._kafka_classpath()
        config = self.folder / "server.properties"
        config.write_text(_BROKER.format(
            port=self.port, internal=self.internal, controller=self.controller,
            pki=self.pki, store_pw=_STORE_PW, data=self.folder / "data",
            jaas="org.apache.kafka.common.security.scram.ScramLoginModule required;",
        ))  # fmt: skip
        scram = f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"
        done = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t",
             "c2VjdXJlLWFtYS1zdHJlYW0", "-c", str(config), "--add-scram", scram],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        log = (self.folder / "kafka.out").open("ab")
        self._proc = subprocess.Popen(
            [java, "-Xms128m", "-Xmx512m", f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
             f"-Dkafka.logs.dir={self.folder / 'logs'}", "-cp", classpath, "kafka.Kafka",
             str(config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        admin = AdminClient({**self.client_config(), "log_level": "0"})
        deadline = time.monotonic() + READY_S
        while True:
            assert self._proc.poll() is None, (self.folder / "kafka.out").read_text()[-3000:]
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:  # KafkaException while the broker comes up
                pass
            assert time.monotonic() < deadline, "the secure broker did not come up"
            time.sleep(0.5)

    def create_topics(self, names: list[str], partitions: int = 1) -> None:
        admin = AdminClient(self.client_config())
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for future in futures.values():
            future.result(30)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
            self._proc = None


#: The ACL rule of docs/operations.md ("Redis ACL"), for the key prefix ``ama``: every command
#: the worker, the retrain job, `model publish/list/rollback` and the dashboard send (the verdict
#: script's HMGET/HGET/HSET/EXPIRE/TTL run as this user too), on that prefix's keys only.
ACL_RULE = (
    "on >{password} resetkeys ~{prefix}:* resetchannels -@all +ping +evalsha "
    "+eval +script|load +get +set +del +rpush +lrange +hmget +hget +hset +expire +ttl"
)


def redis_pem(pki: Path) -> tuple[Path, Path]:
    """The broker's key and certificate as PEM for redis-server (openssl reads the PKCS#12)."""
    key = pki / "redis.key"
    if not key.exists():
        done = subprocess.run(
            ["openssl", "pkcs12", "-in", str(pki / "broker.p12"), "-nodes", "-nocerts",
             "-passin", f"pass:{_STORE_PW}", "-out", str(key)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return key, pki / "broker.pem"


class SecureRedis:
    """redis-server whose default user is off, with ACL user ``ama`` (:data:`ACL_RULE`, prefix
    ``prefix``), and TLS only when ``pki`` is given."""

    def __init__(self, prefix: str, pki: Path | None = None) -> None:
        self.port = free_ports(1)[0]
        self.prefix = prefix
        self.pki = pki
        scheme = "rediss" if pki else "redis"
        self.url = f"{scheme}://{USER}@127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH"
        rule = ACL_RULE.format(password=PASSWORD, prefix=self.prefix).split()
        argv = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--user", "default", "off", "--user", USER, *rule,
                "--user", "admin", "on", f">{PASSWORD}-admin", "~*", "&*", "+@all"]  # fmt: skip
        if self.pki is None:
            argv += ["--port", str(self.port)]
        else:
            key, cert = redis_pem(self.pki)
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.pki / "ca.pem"),
                     "--tls-auth-clients", "no"]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.admin().ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the secure redis-server did not start"
                time.sleep(0.05)

    def admin(self) -> redis.Redis:
        """A client with every right (for the tests' own reads)."""
        tls = {"ssl_ca_certs": str(self.pki / "ca.pem")} if self.pki else {}
        url = self.url.replace(f"{USER}@", "admin@")
        return redis.Redis.from_url(url, password=f"{PASSWORD}-admin", **tls)

    def env(self, *, password: str = PASSWORD, ca: str = "ca.pem") -> dict[str, str]:
        """The documented settings as AMA_* variables."""
        env = {"AMA_REDIS__URL": self.url, "AMA_REDIS__PASSWORD": password,
               "AMA_REDIS__KEY_PREFIX": self.prefix}  # fmt: skip
        if self.pki is not None:
            env["AMA_REDIS__SSL_CAFILE"] = str(self.pki / ca)
        return env

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None
