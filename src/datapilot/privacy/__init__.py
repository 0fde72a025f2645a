"""Personal data in requests to remote models: detected offline, masked with stable placeholders before
the request leaves, restored in the answer (streamed answers included); or refused, per model.

Depends only on ``datapilot.core`` and the standard library. See docs/privacy.md.
"""

from datapilot.privacy._corpus import LabeledText, Score, approx_tokens, evaluate, generate_corpus, prompt_of_tokens
from datapilot.privacy._detect import (
    BANK_CARD,
    CN_ID,
    EMAIL,
    IPV4,
    IPV6,
    KINDS,
    PERSON,
    PHONE,
    STRUCTURED_KINDS,
    Span,
    card_network_ok,
    cn_id_check_char,
    detect,
    luhn_check_digit,
    luhn_ok,
    valid_cn_id,
)
from datapilot.privacy._mask import LABELS, PLACEHOLDER, Masker, StreamRestorer, json_escape
from datapilot.privacy._policy import (
    POLICIES,
    REMOTE_BACKENDS,
    PiiBlockedError,
    Policy,
    PrivacyReport,
    ReportSink,
    RequestPrivacy,
    find_kinds,
    policy_for,
)

__all__ = [
    "BANK_CARD",
    "CN_ID",
    "EMAIL",
    "IPV4",
    "IPV6",
    "KINDS",
    "LABELS",
    "PERSON",
    "PHONE",
    "PLACEHOLDER",
    "POLICIES",
    "REMOTE_BACKENDS",
    "STRUCTURED_KINDS",
    "LabeledText",
    "Masker",
    "PiiBlockedError",
    "Policy",
    "PrivacyReport",
    "ReportSink",
    "RequestPrivacy",
    "Score",
    "Span",
    "StreamRestorer",
    "approx_tokens",
    "card_network_ok",
    "cn_id_check_char",
    "detect",
    "evaluate",
    "find_kinds",
    "generate_corpus",
    "json_escape",
    "luhn_check_digit",
    "luhn_ok",
    "policy_for",
    "prompt_of_tokens",
    "valid_cn_id",
]
