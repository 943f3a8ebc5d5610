# Vacsine: Ansible connection plugin that runs tasks in a Docker container through the
# `docker` CLI. Shipped inside the vacsine binary (src/executor/ansible.rs embeds it with
# include_str!) and written to a private temporary directory for each `ansible` step.
#
# Every process is started from an argv list (no shell on the host side). File paths reach
# the container's shell as positional parameters ("$1"), never spliced into a command string.
from __future__ import annotations

DOCUMENTATION = """
    name: vacsine_docker
    short_description: run tasks in a Docker container with docker exec
    description:
        - Runs commands with C(docker exec) and streams files through C(docker exec -i ... cat).
        - The container needs C(/bin/sh) and C(cat) (and Python for most modules).
    author: Vacsine
    options:
        remote_addr:
            description: Name or id of the container.
            default: inventory_hostname
            type: str
            vars:
                - name: inventory_hostname
                - name: ansible_host
        docker_binary:
            description: The docker client to run.
            default: docker
            type: str
            vars:
                - name: ansible_vacsine_docker_binary
    extends_documentation_fragment:
        - connection_pipelining
"""

import os
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# Run as an argument of `sh -c` with the path as "$1": the path is never parsed by a shell.
_WRITE = 'cat > "$1"'
_READ = 'test -f "$1" || { echo "no such file: $1" >&2; exit 66; }; cat < "$1"'


class Connection(ConnectionBase):
    """Tasks run in a container with `docker exec`."""

    transport = "vacsine_docker"
    has_pipelining = True

    def _container(self) -> str:
        return to_text(self.get_option("remote_addr"))

    def _docker(self) -> str:
        return to_text(self.get_option("docker_binary"))

    def _argv(self, interactive: bool, *cmd: str) -> list:
        argv = [self._docker(), "exec"]
        if interactive:
            argv.append("-i")
        argv.append(self._container())
        argv.extend(cmd)
        return [to_bytes(a, errors="surrogate_or_strict") for a in argv]

    def _connect(self) -> Connection:
        if not self._connected:
            display.vvv("ESTABLISH VACSINE_DOCKER CONNECTION", host=self._container())
            self._connected = True
        return self

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        argv = self._argv(in_data is not None, "/bin/sh", "-c", cmd)
        display.vvv("EXEC %r" % (argv,), host=self._container())
        try:
            p = subprocess.run(
                argv,
                input=in_data,
                stdin=None if in_data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        except OSError as e:
            raise AnsibleConnectionFailure("cannot run %s: %s" % (self._docker(), e))
        self._check_reachable(p.returncode, p.stderr)
        return p.returncode, p.stdout, p.stderr

    def _check_reachable(self, rc: int, stderr: bytes) -> None:
        # The docker client's own errors (missing or stopped container, daemon down) make the
        # host unreachable rather than look like a module's output.
        if rc != 0 and stderr.startswith((b"Error: No such container", b"Error response from daemon", b"Cannot connect to the Docker daemon")):
            raise AnsibleConnectionFailure(
                "container %s: %s" % (self._container(), to_text(stderr, errors="surrogate_or_strict").strip())
            )

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._container())
        if not os.path.isfile(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        argv = self._argv(True, "/bin/sh", "-c", _WRITE, "sh", out_path)
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as src:
            p = subprocess.run(argv, stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        self._check_reachable(p.returncode, p.stderr)
        if p.returncode != 0:
            raise AnsibleError(
                "failed to write %s in container %s: %s" % (out_path, self._container(), to_text(p.stderr).strip())
            )

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._container())
        argv = self._argv(False, "/bin/sh", "-c", _READ, "sh", in_path)
        tmp = to_bytes(out_path, errors="surrogate_or_strict") + b".vacsine-part"
        with open(tmp, "wb") as dst:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=dst, stderr=subprocess.PIPE, check=False)
        if p.returncode != 0:
            os.unlink(tmp)
            self._check_reachable(p.returncode, p.stderr)
            raise AnsibleError(
                "failed to read %s in container %s: %s" % (in_path, self._container(), to_text(p.stderr).strip())
            )
        os.replace(tmp, to_bytes(out_path, errors="surrogate_or_strict"))

    def close(self) -> None:
        self._connected = False
