"""The ``d1store`` command line: ``d1store --help`` lists the subcommands."""

from d1store.attachments.cli import attachments
from d1store.cli.app import main
from d1store.cli.doctor import doctor
from d1store.cli.listing import messages, threads
from d1store.cli.local import local_d1
from d1store.cli.schema import init
from d1store.cli.transfer import copy, export, import_
from d1store.migrations.cli import db

for _command in (init, db, attachments, doctor, threads, messages, export, import_, copy, local_d1):
    main.add_command(_command)

__all__ = ["main"]
