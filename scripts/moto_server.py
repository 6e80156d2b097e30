"""moto in server mode, with DynamoDB writes made atomic with respect to each other.

moto's threaded server applies concurrent TransactWriteItems (and conditional writes) to
copies of a table without a lock, so two transactions conditioned on the same item can both
pass: DynamoDB itself serialises them. The store's "exactly one rotation" contract then
fails now and then under load (seen: 2 of 12 concurrent rotations won). Every write
operation here takes one lock; reads do not. Usage: python3 scripts/moto_server.py -H HOST -p PORT
"""

import sys
import threading

from moto.dynamodb.models import DynamoDBBackend

_lock = threading.RLock()


def _serialised(name):
    original = getattr(DynamoDBBackend, name)

    def locked(self, *args, **kwargs):
        with _lock:
            return original(self, *args, **kwargs)

    locked.__name__ = name
    setattr(DynamoDBBackend, name, locked)


for _name in (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
):
    _serialised(_name)

from moto.server import main  # noqa: E402  (after the patch)

if __name__ == "__main__":
    main(sys.argv[1:])
