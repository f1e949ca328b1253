"""The fork server that runs *inside* a sandbox (standard library only, Python >= 3.9).

Started once per warm sandbox as ``/usr/bin/python3 -I -S -B -c <this file> turngym-forkserver
[--init]``, it reads requests from stdin and answers on stdout in frames of
``kind (1 byte) + length (4 bytes, big-endian) + payload``. The host side and the protocol are
described in :mod:`turngym.sandboxes.forkserver`; this file is shipped as source text, so it
imports nothing from turngym.

Per request the server forks. The child starts a new session (own process group), raises its
OOM score (the kernel kills it, not the server), resets its signals, moves to the requested
working directory, gets fresh pipes as stdin/stdout/stderr, closes every other descriptor and
then either runs Python code in this pre-initialised interpreter (``python3 [-I -S -B -u -E -s]
-c CODE ...`` or ``python3 FILE ...``) or ``execve``s the command. When the command exits (or
the host asks for a kill at its deadline, or its output passes the kill cap) the server kills
every other process it can signal (``kill(-1, SIGKILL)``: the sandbox user's processes, never
itself) and reports the exit status.

The server is non-dumpable (no process can ptrace it or read its memory, environment or
descriptors through /proc) and ignores every catchable signal. With ``--init`` it is pid 1 of
its own pid namespace, which the kernel protects from SIGKILL/SIGSTOP sent from inside; without
it (Docker) a command of the same user can still SIGKILL it, which costs the host one restart.
"""

import json
import os
import select
import signal
import struct
import sys

HEADER = struct.Struct(">cI")
MARKER = "turngym-forkserver"
PYTHON_FLAGS = {"-I", "-S", "-B", "-u", "-E", "-s"}
CATCHABLE = [getattr(signal, name) for name in (
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGTSTP",
    "SIGTTIN", "SIGTTOU", "SIGPIPE", "SIGXFSZ", "SIGXCPU", "SIGVTALRM", "SIGPROF", "SIGWINCH",
    "SIGURG", "SIGIO", "SIGPWR", "SIGTRAP", "SIGCONT") if hasattr(signal, name)]


def set_dumpable(value):
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, int(value), 0, 0, 0)  # PR_SET_DUMPABLE
    except Exception:
        pass


class Server:
    def __init__(self, rfd, wfd, as_init):
        self.rfd, self.wfd, self.as_init = rfd, wfd, as_init
        self.current = None  # pid of the running command
        self.current_status = None
        self.std_encoding = (sys.stdout.encoding, sys.stdout.errors, sys.stderr.errors)

    # -- frames ------------------------------------------------------------------------
    def send(self, kind, payload=b""):
        data = HEADER.pack(kind, len(payload)) + payload
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def read_exact(self, n):
        """Exactly ``n`` bytes of the request stream. The server never reads ahead, so a child
        forked between two frames holds no byte of the frames after them (stdin, say)."""
        parts, left = [], n
        while left:
            chunk = os.read(self.rfd, left)
            if not chunk:
                raise EOFError
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def next_frame(self):
        kind, size = HEADER.unpack(self.read_exact(HEADER.size))
        return kind, self.read_exact(size)

    # -- processes ---------------------------------------------------------------------
    def kill_others(self):
        """SIGKILL every process this server may signal (never itself), then reap.

        kill(-1) signals every target under the kernel's task-list lock, which fork also
        takes, so a fork bomb cannot slip a new process past one call; three is belt and braces.
        """
        for _ in range(3):
            try:
                os.kill(-1, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                break
            self.reap()
        self.reap()

    def reap(self):
        """Collect exited children (as pid 1: every orphan), keeping the command's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.current:
                self.current_status = status

    def spawn(self, req, has_stdin):
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        r_in = w_in = None
        if has_stdin:
            r_in, w_in = os.pipe()
        for attempt in range(50):
            try:
                pid = os.fork()
                break
            except BlockingIOError:  # the pids limit is still full of dying processes
                self.kill_others()
                select.select([], [], [], 0.02)
        else:
            for fd in (r_out, w_out, r_err, w_err, r_in, w_in):
                if fd is not None:
                    os.close(fd)
            return None
        if pid == 0:
            try:
                child(req, r_in, w_out, w_err, self.std_encoding)
            finally:
                os._exit(127)
        for fd in (w_out, w_err, r_in):
            if fd is not None:
                os.close(fd)
        return pid, r_out, r_err, w_in

    def run(self, req):
        if req.get("kill_first"):
            self.kill_others()
        has_stdin = req.get("stdin") is not None
        started = self.spawn(req, has_stdin)
        if started is None:
            self.send(b"F", b"fork failed: the process limit stays full")
            return
        pid, r_out, r_err, w_in = started
        self.current, self.current_status = pid, None
        self.send(b"S")
        # stdin is read only now, after the fork: the child never holds a copy of it
        stdin_data = self.next_frame()[1] if has_stdin else None
        out_cap, kill_cap = req["out_cap"], req["kill_cap"]
        totals = {r_out: 0, r_err: 0}
        kinds = {r_out: b"O", r_err: b"E"}
        reads = [r_out, r_err]
        pending = memoryview(stdin_data or b"")
        if w_in is not None:
            os.set_blocking(w_in, False)
            if not pending:
                os.close(w_in)
                w_in = None
        pidfd = None
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pass
        killed = flooded = False
        while reads or self.current_status is None:
            running = self.current_status is None
            watch = reads + [self.rfd] + ([pidfd] if pidfd is not None and running else [])
            writes = [w_in] if w_in is not None else []
            timeout = None if (pidfd is not None or not running) else 0.01
            readable, writable, _ = select.select(watch, writes, [], timeout)
            if writable:
                try:
                    n = os.write(w_in, pending[:65536])
                    pending = pending[n:]
                except BlockingIOError:
                    pass
                except OSError:
                    pending = memoryview(b"")
                if not pending:
                    os.close(w_in)
                    w_in = None
            for fd in readable:
                if fd == self.rfd:
                    try:
                        got = self.next_frame()
                    except EOFError:  # the host is gone: take everything down with us
                        self.kill_others()
                        os._exit(0)
                    if got[0] == b"K" and not killed:
                        killed = True
                        self.kill_others()
                elif fd == pidfd:
                    pass  # handled below
                else:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        reads.remove(fd)
                        os.close(fd)
                        continue
                    before = totals[fd]
                    totals[fd] += len(chunk)
                    room = out_cap - before
                    if room > 0:
                        self.send(kinds[fd], chunk[:room])
                    if not flooded and totals[r_out] + totals[r_err] > kill_cap:
                        flooded = True
                        self.kill_others()
            if self.current_status is None:
                self.reap()
                if self.current_status is not None:
                    # the command returned: nothing it started may outlive it (this also
                    # closes the pipes that its background children still hold)
                    self.kill_others()
        if w_in is not None:
            os.close(w_in)
        if pidfd is not None:
            os.close(pidfd)
        while self.current_status is None:
            try:
                done, status = os.waitpid(pid, 0)
            except ChildProcessError:  # reaped and lost: cannot happen, but never hang
                done, status = pid, signal.SIGKILL
            if done == pid:
                self.current_status = status
        self.kill_others()
        status, self.current = self.current_status, None
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        self.send(b"D", json.dumps({"exit_code": code, "out_total": totals[r_out],
                                    "err_total": totals[r_err], "killed": killed,
                                    "flooded": flooded}).encode())

    def renew(self):
        """Between episodes: kill every other process, then exec a fresh copy of this server
        (same pid, same streams), so no byte of an earlier episode stays in the memory that the
        next episode's children are forked from."""
        self.kill_others()
        os.dup2(self.rfd, 0)
        os.dup2(self.wfd, 1)
        os.execv(sys.executable, sys.orig_argv)

    def serve(self):
        self.send(b"H", json.dumps({"pid": os.getpid(), "init": self.as_init}).encode())
        while True:
            try:
                kind, payload = self.next_frame()
            except EOFError:
                self.kill_others()
                return
            if kind == b"X":
                self.run(json.loads(payload))
            elif kind == b"R":
                self.renew()
            elif kind == b"P":
                self.send(b"P")
            # a late b"K" for a command that already finished is ignored


def python_spec(argv):
    """(flags, code, path, args) when argv runs Python code we can run in a fork, else None."""
    if not argv or argv[0] not in ("python3", sys.executable):
        return None
    flags, i = set(), 1
    while i < len(argv) and argv[i] in PYTHON_FLAGS:
        flags.add(argv[i])
        i += 1
    if i + 1 < len(argv) and argv[i] == "-c":
        return flags, argv[i + 1], None, argv[i + 2:]
    if i < len(argv) and not argv[i].startswith("-") and argv[i] != "":
        return flags, None, argv[i], argv[i + 1:]
    return None


def child(req, r_in, w_out, w_err, std_encoding):
    """In the forked child: isolate, then run the command. Never returns."""
    os.setsid()
    if req.get("oom_score_adj") is not None:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(req["oom_score_adj"]))
        except OSError:
            pass
    spec = python_spec(req["argv"])
    for sig in CATCHABLE:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    if spec is not None:  # what a fresh interpreter has
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if r_in is None:
        r_in = os.open("/dev/null", os.O_RDONLY)
    os.dup2(r_in, 0)
    os.dup2(w_out, 1)
    os.dup2(w_err, 2)
    os.closerange(3, 1 << 16)
    env = req["env"]
    try:
        os.chdir(req["cwd"])
    except OSError as err:
        os.write(2, ("cannot enter %s: %s\n" % (req["cwd"], err.strerror)).encode())
        os._exit(126)
    if spec is None:
        try:
            os.execvpe(req["argv"][0], req["argv"], env)
        except OSError as err:
            os.write(2, ("%s: %s\n" % (req["argv"][0], err.strerror)).encode())
            os._exit(127 if isinstance(err, FileNotFoundError) else 126)
    os._exit(run_python(spec, env, std_encoding))


def run_python(spec, env, std_encoding):
    """Run Python code the way ``python3 [flags] -c CODE`` / ``python3 FILE`` would; exit code."""
    import builtins
    import io
    import types

    flags, code, path, args = spec
    set_dumpable(True)
    os.environ.clear()
    os.environ.update(env)
    encoding, out_errors, err_errors = std_encoding
    unbuffered = "-u" in flags

    def stream(fd, mode, errors, line_buffering):
        raw = io.FileIO(fd, mode, closefd=False)
        if mode == "r":
            return io.TextIOWrapper(io.BufferedReader(raw), encoding, out_errors)
        buffered = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding, errors, line_buffering=line_buffering,
                                write_through=unbuffered)

    sys.stdin = sys.__stdin__ = stream(0, "r", out_errors, False)
    sys.stdout = sys.__stdout__ = stream(1, "w", out_errors, False)
    sys.stderr = sys.__stderr__ = stream(2, "w", err_errors, True)
    sys.dont_write_bytecode = True
    isolated = "-I" in flags
    try:
        if code is None:
            with open(path, "rb") as f:
                source = f.read()
            filename = path
            sys.argv = [path, *args]
            first = os.path.dirname(os.path.abspath(path))
        else:
            source, filename = code, "<string>"
            sys.argv = ["-c", *args]
            first = ""
    except OSError as err:
        sys.stderr.write("%s: can't open file %r: [Errno %d] %s\n" % (sys.executable, path, err.errno, err.strerror))
        sys.stderr.flush()
        return 2
    if "-S" not in flags:
        try:
            import site

            site.main()
        except Exception:
            pass
    if not isolated:
        sys.path.insert(0, first)
    main = types.ModuleType("__main__")
    main.__dict__.update({"__builtins__": builtins, "__spec__": None, "__loader__": None})
    if code is None:
        main.__file__ = path
    sys.modules["__main__"] = main
    exit_code = 0
    try:
        compiled = compile(source, filename, "exec")
        exec(compiled, main.__dict__)
    except SystemExit as exc:
        exit_code = system_exit_code(exc)
    except BaseException:
        etype, value, tb = sys.exc_info()
        tb = tb.tb_next if tb is not None else None  # hide this function's frame
        sys.excepthook(etype, value.with_traceback(tb), tb)
        exit_code = 1
    return finalize(exit_code)


def system_exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def finalize(exit_code):
    """What interpreter shutdown does: join threads, run atexit, flush the std streams."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except SystemExit as exc:
            exit_code = system_exit_code(exc)
        except BaseException:
            pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as exc:
        exit_code = system_exit_code(exc)
    except BaseException:
        pass
    for name in ("stdout", "stderr"):
        try:
            getattr(sys, name).flush()
        except BaseException:
            if name == "stdout":
                exit_code = 120
    return exit_code


def main():
    as_init = "--init" in sys.argv
    set_dumpable(False)
    for sig in CATCHABLE:
        if sig not in (signal.SIGCONT,):
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (OSError, ValueError):
                pass
    rfd, wfd = os.dup(0), os.dup(1)  # non-inheritable copies; 0 and 1 become /dev/null
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    try:
        Server(rfd, wfd, as_init).serve()
    except BrokenPipeError:
        pass


if __name__ == "__main__" and MARKER in sys.argv:
    main()
