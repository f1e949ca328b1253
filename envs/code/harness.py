"""The grading harness: run INSIDE a fresh grading sandbox as ``python3 -I -S -B -c HARNESS``
(the grader ships this file's text; turngym itself imports it only for :func:`encode`).
One program, two processes:

**The test side** holds everything secret. It first forks the candidate side (below), while
it holds nothing but this program. Then it makes itself non-dumpable
(``prctl(PR_SET_DUMPABLE, 0)``): from then on no other process of the sandbox user can read its
memory (``/proc/PID/mem``, ``process_vm_readv``, ptrace), its open files (``/proc/PID/fd``) or
its environment; it refuses to grade if that fails. Only then does it read the job from stdin,
into memory only: the hidden tests' sources, the trusted context (the task's prompt: helpers
the tests call), one random nonce per test, the solution's source. Nothing of it is ever
written to a file. It ignores the signals a candidate could send to disturb it (``SIGALRM``
counts only once the deadline really passed), and runs each test body in a namespace of its
own, in this process, where the candidate's code never runs.

**The candidate side** has /dev/null for stdin, stdout and stderr and one socket to the test
side. It loads the solution once, as module ``solution``, and then, per test, forks a copy (its
own session, killed whole when the test ends) that answers calls on a socket of its own.

**Between them only plain data crosses.** The test side binds the entry point (also as
``candidate``), and the solution's other functions that the context does not define, to
proxies; a call sends its arguments and gets back the return value in a tagged binary form
(:func:`encode` / :func:`decode`) of None, bool, int, float, complex, str, bytes and lists,
tuples, dicts, sets and frozensets of them, rebuilt on the test side as exact built-in values.
Objects with a forged ``__eq__``, subclasses of built-in types, patched builtins or modules,
frames and threads stay in the candidate's process. An exception the candidate raises arrives
as the first built-in ``Exception`` class in its MRO (never ``StopIteration``, which would end a
test's loop early).

**The verdict.** A test passes when its body returns normally within its deadline and nothing
went wrong with the candidate's process during it (it died, hung, sent malformed data, or
raised ``SystemExit``/``KeyboardInterrupt``: the test fails whatever the test code caught).
Only then does the test side write ``PASS <nonce>`` to its stdout, which the candidate cannot
reach, with a nonce the candidate never had. Exiting, crashing, forging output, patching
anything, scanning memory or files, signals, atexit hooks, threads and forked processes that
outlive a call can make a test fail, never pass.
"""

import _socket
import builtins
import os
import signal
import sys
import time

MAX_MESSAGE = 16 << 20  # bytes of one message (a call's arguments or its return value)
MAX_DEPTH = 200  # nesting of one value
_IGNORED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGPIPE, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
# Exceptions that steer control flow rather than report an error: from a candidate they could
# end a test's loop early (all(map(f, xs)) is True when f raises StopIteration).
_NOT_MAPPED = (StopIteration, StopAsyncIteration)


# -- the wire: plain values in a tagged binary form, length-prefixed messages ----------------------
# Not json: importing it (and the re module under it) costs two fresh interpreters more than the
# rest of their start-up. One tag byte per value: N T F (None, True, False), i<hex>; (int: hex is
# linear-time both ways, unlike decimal), f<float.hex>; and c<re>;<im>; (exact, nan and inf
# included), s<n>:<utf-8> and b<n>:<bytes>, l t e z (list, tuple, set, frozenset) and d (dict,
# keys and values alternating) followed by <count>: and the items.
_SEQUENCE_TAGS = {list: b"l", tuple: b"t", set: b"e", frozenset: b"z"}
_SEQUENCE_TYPES = {ord("l"): list, ord("t"): tuple, ord("e"): set, ord("z"): frozenset}


def encode(value):
    """``value`` as bytes, if it is built only of exact built-in types; else TypeError."""
    out = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value, out, depth):
    kind = type(value)
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    if value is None:
        out.append(b"N")
    elif kind is bool:
        out.append(b"T" if value else b"F")
    elif kind is int:
        out.append(b"i%x;" % value)
    elif kind is float:
        out.append(b"f%s;" % value.hex().encode())
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        out += (b"s%d:" % len(data), data)
    elif kind is bytes:
        out += (b"b%d:" % len(value), value)
    elif kind in _SEQUENCE_TAGS:
        out.append(b"%s%d:" % (_SEQUENCE_TAGS[kind], len(value)))
        for item in value:
            _encode(item, out, depth + 1)
    elif kind is dict:
        out.append(b"d%d:" % len(value))
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    elif kind is complex:
        out.append(b"c%s;%s;" % (value.real.hex().encode(), value.imag.hex().encode()))
    else:
        raise TypeError("a value of type %s cannot be passed between the tests and the solution "
                        "(only plain built-in data can)" % kind.__name__)


def decode(data):
    """The value :func:`encode` made ``data`` from; ValueError for anything else."""
    try:
        value, end = _decode(data, 0, 0)
    except (IndexError, TypeError, OverflowError, RecursionError, MemoryError) as err:
        raise ValueError("malformed value (%s)" % type(err).__name__) from None
    if end != len(data):
        raise ValueError("malformed value (trailing bytes)")
    return value


def _decode(data, pos, depth):
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    tag, pos = data[pos], pos + 1
    if tag in b"NTF":
        return {78: None, 84: True, 70: False}[tag], pos
    if tag in b"ifc":
        end = data.index(b";", pos)
        if tag == 105:
            return int(data[pos:end], 16), end + 1
        real = float.fromhex(data[pos:end].decode("ascii"))
        if tag == 102:
            return real, end + 1
        stop = data.index(b";", end + 1)
        return complex(real, float.fromhex(data[end + 1:stop].decode("ascii"))), stop + 1
    end = data.index(b":", pos, pos + 12)
    if not data[pos:end].isdigit():
        raise ValueError("malformed length")
    size, pos = int(data[pos:end]), end + 1
    if tag in b"sb":
        if pos + size > len(data):
            raise ValueError("truncated value")
        chunk = data[pos:pos + size]
        return (chunk.decode("utf-8", "surrogatepass") if tag == 115 else chunk), pos + size
    if tag in _SEQUENCE_TYPES or tag == 100:
        items = []
        for _ in range(size * (2 if tag == 100 else 1)):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        if tag == 100:
            return dict(zip(items[::2], items[1::2])), pos
        return _SEQUENCE_TYPES[tag](items), pos
    raise ValueError("unknown tag %r" % tag)


def send(sock, message):
    """Send ``message`` (a plain value, or bytes :func:`encode` made already)."""
    payload = message if type(message) is bytes else encode(message)
    sock.sendall(len(payload).to_bytes(4, "big") + payload)


def _recv_exact(sock, size):
    parts, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def recv(sock):
    """The next message, or None at end of stream. ValueError when it is malformed."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise ValueError("a message of %d bytes is over the limit" % size)
    body = _recv_exact(sock, size)
    return None if body is None else decode(body)


# -- the candidate side ---------------------------------------------------------------------------
def _load_solution(source):
    """Run the solution as module ``solution``: (module, None) or (None, why it failed)."""
    module = type(sys)("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    try:
        exec(compile(source, "solution.py", "exec", dont_inherit=True), module.__dict__)
    except BaseException as err:  # SystemExit included: the solution did not load
        return None, _describe(err)
    return module, None


def _describe(err):
    try:
        return ("%s: %s" % (type(err).__name__, err))[:500]
    except BaseException:
        return "an exception that cannot be shown"


def _serve(chan, module):
    """Answer ("call", name, args, kwargs) requests on ``chan`` with ("value", v) or
    ("raise", MRO names, text) until it closes (in a forked child; never returns)."""
    while True:
        try:
            _, name, args, kwargs = recv(chan)
        except BaseException:  # end of stream (the test is over) or anything else
            os._exit(0)
        try:
            reply = encode(("value", module.__dict__[name](*args, **kwargs)))
        except BaseException as err:
            try:
                mro = [cls.__name__ for cls in type(err).__mro__]
            except BaseException:
                mro = []
            reply = encode(("raise", mro, _describe(err)))
        try:
            send(chan, reply)
        except BaseException:
            os._exit(0)


def candidate_main(control):
    """Load the solution (the first message on ``control``), report ("names", [...]) or
    ("error", text), then fork one server per socket the test side passes, replying
    ("pid", pid, n) for each."""
    module, error = _load_solution(recv(control))
    names = [] if module is None else [k for k, v in list(module.__dict__.items())
                                       if type(k) is str and not k.startswith("__") and callable(v)]
    send(control, ("error", error) if error else ("names", names))
    if module is None:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the per-test children
    forks = 0
    while True:
        data, ancillary, _flags, _addr = control.recvmsg(1, _socket.CMSG_SPACE(4))
        if not data or not ancillary:
            return
        fd = int.from_bytes(ancillary[0][2][:4], sys.byteorder)
        pid = os.fork()
        if pid == 0:
            os.setsid()  # its own process group: the test side kills it whole
            control.close()
            _serve(_socket.socket(fileno=fd), module)
        os.close(fd)
        forks += 1
        send(control, ("pid", pid, forks))


# -- the test side --------------------------------------------------------------------------------
class _Deadline(BaseException):
    """The test's time is up (a BaseException: a test's ``except Exception`` cannot catch it)."""


class _CandidateGone(BaseException):
    """The candidate's process died, hung, sent malformed data, or raised SystemExit and co."""


class _Clock:
    """One deadline at a time, enforced with SIGALRM; a SIGALRM before it is ignored."""

    deadline = float("inf")
    expired = False

    @classmethod
    def start(cls, seconds):
        cls.deadline, cls.expired = time.monotonic() + seconds, False
        signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)  # keeps firing if a test swallows it

    @classmethod
    def stop(cls):
        cls.deadline = float("inf")
        signal.setitimer(signal.ITIMER_REAL, 0)

    @staticmethod
    def on_alarm(signum, frame):
        if _Clock.deadline == float("inf"):
            return
        left = _Clock.deadline - time.monotonic()
        if left > 0.002:  # sent by someone else, or early: wait for the real deadline
            signal.setitimer(signal.ITIMER_REAL, left, 0.25)
            return
        _Clock.expired = True
        raise _Deadline()


def _no_dumping():
    """Make this process non-dumpable (see the module docstring); False when that failed."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0 and libc.prctl(3, 0, 0, 0, 0) == 0  # SET/GET_DUMPABLE
    except Exception:
        return False


def _read_stdin():
    parts = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        parts.append(chunk)
    os.close(0)
    return decode(b"".join(parts))


class _Candidate:
    """The candidate side as the test side sees it: a process that forks one server per test.

    It is forked first thing, before the job is read: its memory is a copy of ours while it
    held nothing but this program, and until :meth:`load` sends it the solution it runs nothing
    else. :meth:`load` runs only once stdin, the one place the secrets come from, has been read
    to its end; the child has put /dev/null on its stdin, stdout and stderr long before.
    """

    def __init__(self):
        self.names, self.error, self.forks = [], None, 0
        self.control, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
                self.control.close()
                candidate_main(theirs)
            finally:
                os._exit(0)
        theirs.close()

    def load(self, solution, entry, timeout):
        """Send the solution and wait (up to ``timeout``) until it has run; sets ``error``."""
        _Clock.start(timeout)
        try:
            send(self.control, solution)
            status = recv(self.control)
            _Clock.stop()
        except BaseException as err:
            _Clock.stop()
            self.error = "the solution did not load within %gs" % timeout if _Clock.expired else (
                "the solution's process failed while loading (%s)" % type(err).__name__)
            return
        kind, value = status if type(status) is tuple and len(status) == 2 else (None, None)
        if kind == "error" and type(value) is str:
            self.error = "the solution failed to load: " + value
        elif kind == "names" and type(value) is list and all(type(n) is str for n in value):
            self.names = [n for n in value if n.isidentifier()]
            if entry and entry not in self.names:
                self.error = "the solution defines no function %r" % entry
        else:
            self.error = "the solution's process ended while loading" if status is None else (
                "the solution's process sent a malformed status")

    def server(self):
        """A fresh forked copy of the loaded solution and a socket to it (for one test)."""
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            try:
                self.control.sendmsg([b"F"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                               theirs.fileno().to_bytes(4, sys.byteorder))])
            finally:
                theirs.close()
            self.forks += 1
            return _Server(ours, self._child_pid())
        except BaseException:
            ours.close()
            raise

    def _child_pid(self):
        """The pid of the copy just asked for; replies to earlier requests (a test whose time
        ran out while it waited) are skipped, their copies killed."""
        while True:
            try:
                kind, pid, n = recv(self.control)
            except (TypeError, ValueError, OSError):
                kind = pid = n = None
            if kind != "pid" or type(pid) is not int or pid <= 1:
                raise _CandidateGone("the solution's process could not start a copy for this test")
            if n == self.forks:
                return pid
            _kill_group(pid)

    def close(self):
        if self.control is not None:
            self.control.close()
            _kill_group(self.pid)


def _kill_group(pid):
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass


class _Server:
    """One test's copy of the solution; ``broken`` once anything went wrong with it."""

    def __init__(self, sock, pid):
        self.sock, self.pid, self.broken = sock, pid, None

    def call(self, name, args, kwargs):
        if self.broken:
            raise _CandidateGone(self.broken)
        request = encode(("call", name, args, kwargs))  # TypeError: the test's own doing
        try:
            send(self.sock, request)
            reply = recv(self.sock)
        except (ValueError, OSError):
            self._fail("the solution's process sent malformed data during a call to %s()" % name)
        if type(reply) is tuple and len(reply) == 2 and reply[0] == "value":
            return reply[1]
        if type(reply) is tuple and len(reply) == 3 and reply[0] == "raise":
            raise self._exception(name, reply[1], reply[2])
        self._fail("the solution's process died during a call to %s()" % name)

    def _exception(self, name, mro, message):
        """The first built-in Exception class of the candidate's MRO, with its message."""
        message = message if type(message) is str else ""
        for cls_name in mro if type(mro) is list else []:
            cls = getattr(builtins, cls_name, None) if type(cls_name) is str else None
            if type(cls) is type and issubclass(cls, Exception) and not issubclass(cls, _NOT_MAPPED):
                try:
                    return cls(message)
                except Exception:
                    return Exception(message)
        self._fail("%s() raised %s" % (name, message or "an exception that is not an Exception"))

    def _fail(self, why):
        self.broken = why
        raise _CandidateGone(why)

    def close(self):
        self.sock.close()
        _kill_group(self.pid)


class _Proxy:
    """A solution function as the tests see it: calling it is a call in the candidate's process."""

    def __init__(self, server, name):
        self._server, self.__name__ = server, name

    def __call__(self, *args, **kwargs):
        return self._server.call(self.__name__, args, kwargs)

    def __repr__(self):
        return "<solution function %s>" % self.__name__


def _compile(source, name):
    try:
        return compile(source, name, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None


def _run_test(candidate, job, index, code, context):
    """Run test ``index``: None when it passed, else why it failed."""
    if code is None:
        return "the test does not compile"
    if candidate.error:
        return candidate.error
    server = None
    _Clock.start(job["test_timeout_s"])
    try:
        server = candidate.server()
        namespace = {"__builtins__": dict(builtins.__dict__), "__name__": "__test__"}
        if context is not None:
            exec(context, namespace)
        for name in candidate.names:  # the context's helpers are the task's, not the candidate's
            if name not in namespace and name not in builtins.__dict__:
                namespace[name] = _Proxy(server, name)
        entry = job.get("entry_point")
        if entry:
            namespace[entry] = namespace["candidate"] = _Proxy(server, entry)
        exec(code, namespace)
        _Clock.stop()
        failed = server.broken
    except BaseException as err:
        _Clock.stop()
        failed = "timed out" if _Clock.expired else (server and server.broken) or _describe(err)
    finally:
        if server is not None:
            server.close()
    return "timed out" if _Clock.expired else failed


def test_main():
    candidate = _Candidate()
    if not _no_dumping():
        candidate.close()
        os.write(2, b"test *: the grader could not protect its memory (prctl); nothing graded\n")
        return 1
    job = _read_stdin()  # only now: the secrets go nowhere but this process's memory
    for sig in _IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _Clock.on_alarm)
    tests = [_compile(source, "test.py") for source in job["tests"]]
    context = _compile(job.get("context") or "", "context.py")
    candidate.load(job["solution"], job.get("entry_point"), job["test_timeout_s"])
    for index, code in enumerate(tests):
        why = _run_test(candidate, job, index, code, context)
        if why is None:
            os.write(1, ("PASS %s\n" % job["nonces"][index]).encode())
        else:
            line = "test %d: %s" % (index, " ".join(str(why).split()))
            os.write(2, (line[:2000] + "\n").encode())
    candidate.close()
    return 0


if __name__ == "__main__":
    sys.exit(test_main())
