"""retry.py classification and the tenacity layer, without a server."""

from __future__ import annotations

import json

import pytest
import requests
import urllib3
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.companies import ApiException as CompaniesApiException
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceMalformedRequest, SalesforceRefusedRequest

from connectors.retry import Action, QuotaExhausted, RetryPolicy, classify, is_retryable


def hs_error(status, body=None, headers=None, cls=ContactsApiException):
    exc = cls(status=status, reason="x")
    exc.body = json.dumps(body) if body is not None else None
    exc.headers = headers or {}
    return exc


def sf_error(cls, status, code):
    return cls("https://x/services/data/v59.0/query", status, "Lead", [{"errorCode": code, "message": "m"}])


def test_hubspot_429_ten_secondly_waits_as_headers_say():
    d = classify(hs_error(429, {"policyName": "TEN_SECONDLY_ROLLING"}, {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}))
    assert d.action is Action.RETRY and d.wait == 10.0
    d = classify(hs_error(429, {"policyName": "TEN_SECONDLY_ROLLING"}, {"Retry-After": "2"}, cls=CompaniesApiException))
    assert d.action is Action.RETRY and d.wait == 2.0


def test_quota_errors():
    assert classify(hs_error(429, {"policyName": "DAILY"})).action is Action.QUOTA
    assert classify(sf_error(SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED")).action is Action.QUOTA
    assert classify(sf_error(SalesforceRefusedRequest, 403, "INSUFFICIENT_ACCESS")).action is Action.FATAL


def test_other_classes():
    assert classify(hs_error(502)).action is Action.RETRY
    assert classify(hs_error(400, {"category": "VALIDATION_ERROR"})).action is Action.FATAL
    assert classify(sf_error(SalesforceMalformedRequest, 400, "MALFORMED_QUERY")).action is Action.FATAL
    assert classify(sf_error(SalesforceMalformedRequest, 400, "UNABLE_TO_LOCK_ROW")).action is Action.RETRY
    assert classify(sf_error(SalesforceExpiredSession, 401, "INVALID_SESSION_ID")).action is Action.REAUTH
    assert classify(requests.ConnectionError("boom")).action is Action.RETRY
    assert classify(requests.ReadTimeout("slow")).action is Action.RETRY
    assert classify(urllib3.exceptions.ReadTimeoutError(None, "/x", "slow")).action is Action.RETRY
    assert classify(urllib3.exceptions.MaxRetryError(None, "/x")).action is Action.RETRY
    assert classify(ValueError("bug")).action is Action.FATAL
    assert is_retryable(hs_error(503)) and not is_retryable(hs_error(404))


def test_policy_retries_then_succeeds_with_injected_sleep():
    sleeps, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise hs_error(429, {"policyName": "TEN_SECONDLY_ROLLING"}, {"Retry-After": "1.5"})
        return "ok"

    assert RetryPolicy(sleep=sleeps.append).call(flaky) == "ok"
    assert sleeps == [1.5, 1.5]


def test_policy_never_retries_validation_and_raises_quota():
    calls = []

    def invalid():
        calls.append(1)
        raise hs_error(400, {"category": "VALIDATION_ERROR"})

    with pytest.raises(ContactsApiException):
        RetryPolicy(sleep=lambda s: None).call(invalid)
    assert len(calls) == 1
    with pytest.raises(QuotaExhausted):
        RetryPolicy(sleep=lambda s: None).call(lambda: (_ for _ in ()).throw(hs_error(429, {"policyName": "DAILY"})))


def test_policy_gives_up_after_attempts():
    calls = []

    def down():
        calls.append(1)
        raise hs_error(500)

    with pytest.raises(ContactsApiException):
        RetryPolicy(attempts=3, sleep=lambda s: None).call(down)
    assert len(calls) == 3


def test_reauth_once():
    calls, reauths = [], []

    def expired():
        calls.append(1)
        if len(calls) == 1:
            raise sf_error(SalesforceExpiredSession, 401, "INVALID_SESSION_ID")
        return "fresh"

    assert RetryPolicy(sleep=lambda s: None).call(expired, reauth=lambda: reauths.append(1)) == "fresh"
    assert reauths == [1]

    def always_expired():
        raise sf_error(SalesforceExpiredSession, 401, "INVALID_SESSION_ID")

    with pytest.raises(SalesforceExpiredSession):
        RetryPolicy(sleep=lambda s: None).call(always_expired, reauth=lambda: reauths.append(1))
    assert reauths == [1, 1]
