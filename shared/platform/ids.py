"""What a document id of ours looks like: one rule for path, query and body ids alike.

Kept apart from shared/platform/fields.py (the pydantic types) so that code with no request
models, such as cursors and the audit trigger, checks ids without loading pydantic.
"""

from __future__ import annotations

import re

# It begins with a letter or a digit, so it is never `.`, `..` or a reserved `__name__`, and
# it has no `/` (which would name a path): every id Firestore can take as a document id.
DOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$"
DOC_ID = re.compile(DOC_ID_PATTERN)
