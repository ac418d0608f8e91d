#!/usr/bin/env python3
"""Writes form and query variants of JSON samples the way Kazoo encodes them (delivery.md section 2).

This is an independent implementation of kz_http_util:json_to_querystring/1, kept apart from the Swift
encoder on purpose: the tests decode its output, so a mistake shared by both would have to be made twice.

    scripts/make_sample_variants.py            # rewrites the variants listed below in samples/
"""
import json
import os
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "..", "samples")

FORM = [
    "channel_create__inbound", "channel_create__outbound", "channel_answer__inbound", "channel_bridge__outbound",
    "channel_destroy__inbound", "channel_destroy__outbound", "notifications__voicemail_new",
    "notifications__low_balance", "notifications__port_request", "notifications__bill_reminder",
    "notifications__inbound_fax", "notifications__topup", "notifications__register", "notifications__missed_call",
    "object__doc_edited_device", "parking__park_parked", "sms__inbound_offnet", "mms__inbound_offnet",
    "webhook__callflow_missed_frontdesk",
]
QUERY = [
    "channel_destroy__inbound", "parking__park_retrieved", "notifications__low_balance",
    "webhook__callflow_missed_frontdesk", "object__doc_deleted_callflow",
]


def value_text(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form, always with '.' or 'e' (20.0)
    return str(v)


def esc(text):
    # urlencode_plus: unreserved kept, space as '+', every other byte %XX uppercase
    return urllib.parse.quote_plus(text, safe="~")


def encode(obj, prefix=None):
    segments = []
    for key, value in obj.items():
        name = key if prefix is None else f"{prefix}[{key}]"
        segments.extend(encode_value(name, value))
    return segments


def encode_value(name, value):
    if value is None:
        return []
    if isinstance(value, dict):
        return encode(value, name) if value else [""]
    if isinstance(value, list):
        if not value:
            return [""]
        out = []
        for element in value:
            out.extend(encode_element(name, element))
        return out
    return [f"{name}={esc(value_text(value))}"]


def encode_element(name, element):
    if isinstance(element, dict):
        return [f"{name}[]={esc(json.dumps(element, separators=(',', ':'), ensure_ascii=False))}"]
    if isinstance(element, list):
        out = []
        for e in element:
            out.extend(encode_element(name, e))
        return out
    if element is None:
        return []
    return [f"{name}[]={esc(value_text(element))}"]


def main():
    for stem in FORM + QUERY:
        with open(os.path.join(SAMPLES, stem + ".json"), encoding="utf-8") as f:
            payload = json.load(f)
        body = "&".join(encode(payload))
        if stem in FORM:
            with open(os.path.join(SAMPLES, stem + ".form"), "w", encoding="utf-8") as f:
                f.write(body)
        if stem in QUERY:
            hook = stem.split("__")[0]
            with open(os.path.join(SAMPLES, stem + ".query"), "w", encoding="utf-8") as f:
                f.write(f"/hooks/{hook}?{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
