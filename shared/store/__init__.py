"""The label store: the contract between precompute and training, and what team members share.

- :mod:`~rat.shared.store.schema`: the layout, the configuration fingerprint, :class:`StoreError`, retries;
- :mod:`~rat.shared.store.access`: opening a folder, zip file or URL for reading or writing;
- :mod:`~rat.shared.store.labels`: label maps and their records;
- :mod:`~rat.shared.store.records`: many records at once, and the consolidated table that makes it cheap;
- :mod:`~rat.shared.store.stamps`: version stamps of objects, learnt without reading them;
- :mod:`~rat.shared.store.ngff`: the OME-Zarr metadata that makes them label images for napari;
- :mod:`~rat.shared.store.dataset`: the definition, index and root a store carries;
- :mod:`~rat.shared.store.checks`: every check of a store against the images it serves;
- :mod:`~rat.shared.store.leases`: runs that write one store at once, each leaving to others what they hold;
- :mod:`~rat.shared.store.legacy`: schema-1 stores, read in the schema-2 layout.

This ``__init__`` only gathers the names most code needs.
"""

from rat.shared.store.access import init_store, open_store
from rat.shared.store.checks import (
    bytes_problems,
    check_for_training,
    check_labels,
    checked_labels,
    label_problem,
    remember_written,
    verify,
)
from rat.shared.store.dataset import dataset_for, record_dataset, store_definition, store_index
from rat.shared.store.labels import label_array, label_ids, labels_sha256, read_labels, record, write_labels
from rat.shared.store.leases import hold
from rat.shared.store.records import consolidate, read_records, store_summary
from rat.shared.store.schema import (
    ATTR,
    DEFAULT_CHUNK,
    MISSING,
    SCHEMA_VERSION,
    StoreError,
    describe_difference,
    fingerprint,
    image_id,
    image_key,
    make_provenance,
    provenance,
    retrying,
)

__all__ = [
    "ATTR", "DEFAULT_CHUNK", "MISSING", "SCHEMA_VERSION", "StoreError", "bytes_problems",
    "check_for_training", "check_labels", "hold", "remember_written",
    "checked_labels",
    "dataset_for", "describe_difference", "fingerprint", "image_id", "image_key", "init_store", "label_array",
    "label_ids", "label_problem", "labels_sha256", "make_provenance", "open_store", "provenance",
    "read_labels",
    "read_records", "record", "record_dataset", "consolidate", "retrying", "store_definition", "store_index",
    "store_summary", "verify", "write_labels",
]
