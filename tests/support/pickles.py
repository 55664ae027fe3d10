"""Pickles as stored data: what django-mailer 2.x and older wrote, and hand-made hostile ones.

The restricted unpickler (``mailer.serialization``) must read the first and refuse the second; the tests that
check so (``test_serialization.py``, ``test_tampered_rows.py``, ``test_legacy_data.py``, ``test_admin_escaping.py``)
build them here.
"""

import base64
import io
import os
import pickle


def legacy_2x(obj, protocol=None):
    """What django-mailer 2.x stored: ``base64.encodebytes(pickle.dumps(email)).decode("ascii")``."""
    return base64.encodebytes(pickle.dumps(obj, protocol)).decode("ascii")


def insert_2x_rows(data: str, message_id: str | None = None) -> None:
    """A queue row and a log row holding ``data`` as django-mailer 2.x writes them: only 2.x's columns, by raw SQL
    (so they work against an older schema too)."""
    from django.db import connection
    from django.utils.timezone import now

    from mailer.models import PRIORITY_MEDIUM, RESULT_SUCCESS

    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {qn('mailer_message')} ({qn('message_data')}, {qn('when_added')}, {qn('priority')}, "
            f"{qn('retry_count')}) VALUES (%s, %s, %s, %s)",
            [data, now(), PRIORITY_MEDIUM, 0],
        )
        cursor.execute(
            f"INSERT INTO {qn('mailer_messagelog')} ({qn('message_data')}, {qn('when_added')}, {qn('priority')}, "
            f"{qn('when_attempted')}, {qn('result')}, {qn('log_message')}, {qn('message_id')}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [data, now(), PRIORITY_MEDIUM, now(), RESULT_SUCCESS, "", message_id],
        )


def legacy_raw(obj, protocol=0):
    """What very old versions stored: the raw pickle as text."""
    return pickle.dumps(obj, protocol=protocol).decode("latin-1")


class SystemCall:
    """Pickles as a call to ``os.system("touch <marker>")``: unpickled by plain pickle, it creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalCall(SystemCall):
    """Pickles as a call to ``eval()`` of code that creates ``marker``."""

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class Global:
    """Stands for ``module.name`` in a hand-made pickle (STACK_GLOBAL, so the name may be dotted)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """Stands for ``func(*args)`` in a hand-made pickle (REDUCE)."""

    def __init__(self, func, args):
        self.func, self.args = func, args


class CraftingPickler(pickle._Pickler):
    """A pickler that writes :class:`Global` and :class:`Call` as the opcodes they stand for."""

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, Global):
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        elif isinstance(obj, Call):
            self.save(obj.func)
            self.save(obj.args)
            self.write(pickle.REDUCE)
        else:
            super().save(obj, save_persistent_id)


def code_args(code):
    """The arguments of ``types.CodeType`` that rebuild ``code`` (Python 3.11+)."""
    return (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_nlocals,
        code.co_stacksize,
        code.co_flags,
        code.co_code,
        code.co_consts,
        code.co_names,
        code.co_varnames,
        code.co_filename,
        code.co_name,
        code.co_qualname,
        code.co_firstlineno,
        code.co_linetable,
        code.co_exceptiontable,
        code.co_freevars,
        code.co_cellvars,
    )


def dotted_name_exploit(marker):
    """A pickle that only names an allowed class, ``django.core.mail.message.EmailMessage``, but walks from it
    (``EmailMessage.__init__.__class__``, ``...__code__.__class__``) to the function and code types, builds a
    function from plain data and calls it."""
    code = eval(compile(f"lambda: open({str(marker)!r}, 'w').close()", "exploit", "eval")).__code__
    module = "django.core.mail.message"
    code_obj = Call(Global(module, "EmailMessage.__init__.__code__.__class__"), code_args(code))
    function = Call(Global(module, "EmailMessage.__init__.__class__"), (code_obj, {}))
    out = io.BytesIO()
    CraftingPickler(out, protocol=4).dump(Call(function, ()))
    return out.getvalue()
