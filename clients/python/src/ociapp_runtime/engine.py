"""The container engines a Runtime's daemon can drive: one adapter class each.

The original runtime drove Docker from the Python process through an
adapter object (``Runtime(engine=DockerAdapter())``). Here the engine lives
in the ``ociapp-runtime serve`` daemon the Runtime starts, so an adapter is
what selects and configures it: it turns into the daemon's engine flags.
"""

__all__ = ["DockerAdapter", "EngineAdapter", "KubernetesAdapter"]


class EngineAdapter:
    """Base of the engine adapters: the daemon flags that select an engine."""

    def daemon_args(self) -> list[str]:
        """Returns the ``ociapp-runtime serve`` flags for this engine."""

        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({' '.join(self.daemon_args())!r})"


class DockerAdapter(EngineAdapter):
    """Runs containers through Docker, the default engine.

    ``host`` is the Docker daemon's address (e.g.
    ``"unix:///var/run/docker.sock"``); by default ``DOCKER_HOST`` or the
    local socket.
    """

    def __init__(self, host: str | None = None) -> None:
        if host is not None and not isinstance(host, str):
            raise TypeError(f"host must be the Docker daemon's address as a string, got {host!r}")
        self.host = host

    def daemon_args(self) -> list[str]:
        return ["--docker-host", self.host] if self.host else []


class KubernetesAdapter(EngineAdapter):
    """Runs containers as pods on this Kubernetes node
    (``ociapp-runtime serve --engine kubernetes``).

    Each argument left at ``None`` takes the daemon's default: ``kubeconfig``
    ``$KUBECONFIG``, ``~/.kube/config`` or the pod's service account;
    ``namespace`` the kubeconfig's; ``node`` ``$NODE_NAME`` or the host
    name; ``containerd`` the node's containerd socket.
    """

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        namespace: str | None = None,
        node: str | None = None,
        containerd: str | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.node = node
        self.containerd = containerd

    def daemon_args(self) -> list[str]:
        args = ["--engine", "kubernetes"]
        for flag, value in (
            ("--kubeconfig", self.kubeconfig),
            ("--namespace", self.namespace),
            ("--node", self.node),
            ("--containerd", self.containerd),
        ):
            if value is not None:
                args += [flag, str(value)]
        return args
