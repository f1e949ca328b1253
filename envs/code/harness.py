"""The grading harness: runs INSIDE a fresh sandbox as ``python3 -I -S -B harness.py``.

It is shipped as a file (never imported by turngym itself) and written, pristine, into the
grading sandbox for every grading exec, next to ``grade.json`` (the candidate's source, the
entry point, the tests' sources and the per-test deadline).

Protocol (see :mod:`turngym.envs.code.grader` for the threat model):

1. Before any candidate code exists in the process, the harness reads everything it needs into
   memory: ``grade.json`` from disk and, from stdin, one random 32-hex-digit nonce per test
   (read straight into a ``bytearray``, so no immutable copy of the nonces is ever made).
2. For each test it forks a child. The child keeps only its own nonce and zeroes the buffer of
   all the others, points stdout at /dev/null, snapshots the builtins and the modules the test
   imports, then executes the candidate as the module ``solution`` and the test body in a fresh
   namespace whose ``__builtins__`` is a private copy taken before the candidate ran. Asserts are
   rewritten so that comparisons and truth tests accept only values of exact built-in types
   (an object whose ``__eq__`` always answers True is refused). The helpers doing that are
   closures over references taken before the candidate ran (see ``_make_helpers``), so patching
   ``builtins``, ``operator`` or this module's globals does not reach them.
3. Only when the test body has returned normally, and the snapshotted modules and builtins are
   unchanged, does the child write ``PASS <nonce>`` to the saved real stdout. ``exit(0)``,
   ``sys.exit(0)``, ``os._exit(0)``, exceptions, timeouts and crashes never print the nonce.
"""

import ast
import builtins
import json
import operator
import os
import signal
import sys
import types

NONCE_LEN = 32
_PLAIN = (int, float, complex, str, bytes, bool, type(None), list, tuple, dict, set, frozenset)
_OPS = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: operator.contains(b, a), ast.NotIn: lambda a, b: not operator.contains(b, a),
}
_type, _len, _isinstance = type, len, isinstance


class _StrictAsserts(ast.NodeTransformer):
    """``assert a == b`` -> ``assert __tg_truth__(__tg_compare__(a, [Eq], [b]))``."""

    def visit_Assert(self, node):
        node.test = self._strict(node.test)
        return node

    def _strict(self, expr):
        if _isinstance(expr, ast.Compare):
            ops = ast.List([ast.Constant(_OP_NAMES.index(_type(op).__name__)) for op in expr.ops], ast.Load())
            call = ast.Call(ast.Name("__tg_compare__", ast.Load()),
                            [expr.left, ops, ast.List(expr.comparators, ast.Load())], [])
            return ast.copy_location(call, expr)
        if _isinstance(expr, ast.BoolOp):
            expr.values = [self._strict(v) for v in expr.values]
            return expr
        if _isinstance(expr, ast.UnaryOp) and _isinstance(expr.op, ast.Not):
            expr.operand = self._strict(expr.operand)
            return expr
        call = ast.Call(ast.Name("__tg_truth__", ast.Load()), [expr], [])
        return ast.copy_location(call, expr)


_OP_NAMES = [op.__name__ for op in _OPS]


def _make_helpers():
    """The assert helpers as closures over references taken now, before candidate code runs.

    They look nothing up in module globals or builtins at call time, so a candidate that patches
    ``builtins.all`` or this module's globals (``import __main__``) does not change them.
    """
    ops = tuple(_OPS.values())
    plain_types = frozenset(_PLAIN)
    containers = frozenset((list, tuple, set, frozenset))
    type_, bool_, len_, range_, dict_, error = type, bool, len, range, dict, AssertionError
    dict_items = dict.items

    def plain(value, depth):
        if depth > 50:
            return False
        kind = type_(value)
        if kind not in plain_types:
            return False
        if kind in containers:
            for item in value:
                if not plain(item, depth + 1):
                    return False
        elif kind is dict_:
            for key, item in dict_items(value):
                if not plain(key, depth + 1) or not plain(item, depth + 1):
                    return False
        return True

    def require(value):
        if not plain(value, 0):
            raise error("the value is not built of plain built-in types (%s)" % type_(value).__name__)
        return value

    def compare(left, op_indices, rights):
        values = [left, *rights]
        for value in values:
            require(value)
        for i in range_(len_(op_indices)):
            if not ops[op_indices[i]](values[i], values[i + 1]):
                return False
        return True

    def truth(value):
        return bool_(require(value))

    return compare, truth


def _compile_test(source):
    tree = _StrictAsserts().visit(ast.parse(source))
    ast.fix_missing_locations(tree)
    return compile(tree, "test.py", "exec", dont_inherit=True, optimize=0)


def _imported_modules(source):
    names = set()
    for node in ast.walk(ast.parse(source)):
        if _isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif _isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(names)


def _read_nonces(count):
    buf = bytearray(NONCE_LEN * count)
    view, got = memoryview(buf), 0
    while got < _len(buf):
        n = os.readv(0, [view[got:]])
        if n == 0:
            break
        got += n
    os.close(0)
    return buf


def _run_child(index, buf, job, out_fd):
    """In the forked child: run test ``index``; write PASS <nonce> only if it passed."""
    mine = bytes(buf[index * NONCE_LEN:(index + 1) * NONCE_LEN])
    for i in range(_len(buf)):  # the other tests' nonces never meet candidate code
        buf[i] = 0
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    test_source = job["tests"][index]
    snapshots = {}
    for name in _imported_modules(test_source):
        try:
            module = __import__(name)
            snapshots[name] = (module, dict(module.__dict__))
        except ImportError:
            pass
    pristine_builtins = dict(builtins.__dict__)
    compare, truth = _make_helpers()
    code = _compile_test(test_source)
    module = types.ModuleType("solution")
    module.__file__ = "solution.py"
    sys.modules["solution"] = module
    exec(compile(job["solution"], "solution.py", "exec", dont_inherit=True), module.__dict__)
    for name, (mod, saved) in snapshots.items():  # undo import-time monkey-patching
        mod.__dict__.clear()
        mod.__dict__.update(saved)
        sys.modules[name] = mod
    namespace = {"__builtins__": dict(pristine_builtins), "__name__": "__test__",
                 "__tg_compare__": compare, "__tg_truth__": truth}
    for key, value in module.__dict__.items():
        # helpers the task's prompt defines (HumanEval tests call them), but never a name that
        # would shadow a builtin the test relies on
        if not key.startswith("__") and key not in pristine_builtins:
            namespace[key] = value
    entry = job.get("entry_point")
    if entry:
        if entry not in module.__dict__:
            raise NameError("the solution defines no %r" % entry)
        namespace[entry] = module.__dict__[entry]
        namespace["candidate"] = module.__dict__[entry]
    exec(code, namespace)
    for name, (mod, saved) in snapshots.items():
        current = mod.__dict__
        if _len(current) != _len(saved) or any(current.get(k) is not v for k, v in saved.items()):
            raise AssertionError("module %r was modified during the test" % name)
    for key, value in pristine_builtins.items():
        if builtins.__dict__.get(key) is not value:
            raise AssertionError("builtins.%s was modified during the test" % key)
    os.write(out_fd, b"PASS " + mine + b"\n")


class _Deadline(Exception):
    pass


def _on_deadline(signum, frame):
    raise _Deadline()


def main():
    with open("grade.json", encoding="utf-8") as fh:
        job = json.load(fh)
    count = _len(job["tests"])
    buf = _read_nonces(count)
    deadline = float(job.get("test_timeout_s", 5.0))
    out_fd = os.dup(1)
    signal.signal(signal.SIGALRM, _on_deadline)
    sys.stdout.flush()
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                _run_child(index, buf, job, out_fd)
                status = 0
            except BaseException as err:  # SystemExit included: exiting early is a failure
                try:
                    os.write(2, ("test %d: %s: %s\n" % (index, _type(err).__name__, err)).encode()[:2000])
                except BaseException:
                    pass
            os._exit(status)
        signal.setitimer(signal.ITIMER_REAL, deadline)
        try:
            os.waitpid(pid, 0)
        except _Deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.write(1, ("TIMEOUT %d\n" % index).encode())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
