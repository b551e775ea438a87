"""ParryClient: the v1 API over HTTP, for CI steps that must survive a flaky network or a restarting server.

Every request is retried with exponential backoff on connection errors, timeouts, `429` and `5xx`;
client errors (`4xx`) are not retried and become a `ClientError` whose message is one sentence (the
problem's `detail`). Submissions carry an `Idempotency-Key` that stays the same across retries, so a
retried POST (or a re-run CI step that passes its own key) never starts a second job. Uploads are safe
to retry because the server addresses models and datasets by the sha256 of their bytes.

No TensorFlow, no FastAPI: only httpx.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from service.domain.jobs import TERMINAL_STATUSES

DEFAULT_SERVER = "http://127.0.0.1:8000"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The API's hints name its routes, for any HTTP client; a CLI user is told the command instead.
CLI_HINTS = {
    "POST /v1/models": "`parry upload-model FILE`",
    "POST /v1/datasets": "`parry upload-dataset FILE`",
    "POST /v1/evaluations": "`parry submit`",
    "POST /v1/trainings": "`parry train`",
    "GET /v1/models": "`parry models`",
    "GET /v1/datasets": "`parry datasets`",
}


class ClientError(Exception):
    """Anything that stops a request from giving an answer; `str(exc)` is one sentence for a user."""


class ServiceUnreachable(ClientError):
    """The server did not answer (connection refused, timeouts, or 5xx) after every retry."""


class ApiError(ClientError):
    """The server answered with an error; `problem` is its problem+json body (or None)."""

    def __init__(self, message: str, *, status: int, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem


class WaitTimeout(ClientError):
    """A job or a model did not reach a final state in the time given."""


def new_idempotency_key() -> str:
    return f"parry-{uuid.uuid4().hex}"


def zip_directory(src: Path, dest: Path) -> Path:
    """Zip a directory (a SavedModel) so that the same files always give the same bytes (and sha256).

    Entries are sorted and carry a fixed time and mode, so re-zipping an unchanged model in CI finds the
    copy the server already has instead of uploading a "new" one.
    """
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(src).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ParryClient:
    """A synchronous client of one Parry server.

    Args:
        server: base URL, e.g. `http://127.0.0.1:8000`.
        api_key: sent as `Authorization: Bearer <key>` when given.
        timeout: seconds for connecting and for each read of an ordinary request.
        upload_timeout: seconds for each read or write while uploading a file.
        retries: extra attempts after the first on connection errors, timeouts, 429 and 5xx.
        backoff: first wait between attempts in seconds; doubles each time, up to `max_backoff`,
            with jitter so that many CI jobs retrying together do not hit the server in step.
        transport: an httpx transport (tests pass `httpx.MockTransport`).
        sleep: how to wait between attempts and polls (tests pass a recorder).
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        upload_timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.upload_timeout = httpx.Timeout(upload_timeout, connect=min(timeout, 10.0))
        self._sleep = sleep
        headers = {"User-Agent": "parry-client/1", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.server,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    @classmethod
    def from_env(cls, server: str | None = None, api_key: str | None = None, **kwargs: Any) -> ParryClient:
        """Arguments first, then PARRY_SERVER and PARRY_API_KEY, then the local default server."""
        return cls(
            server or os.environ.get("PARRY_SERVER") or DEFAULT_SERVER,
            api_key=api_key or os.environ.get("PARRY_API_KEY") or None,
            **kwargs,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ParryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- transport: retries, backoff, errors -------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        upload: tuple[Path, Mapping[str, str]] | None = None,
        stream_to: Path | None = None,
    ) -> httpx.Response:
        """One API call with retries; raises ClientError (one sentence) unless the answer is 2xx.

        `upload` is (file, form fields) sent as multipart field `file`; the file is reopened on each attempt.
        `stream_to` writes the body to that file instead of keeping it in memory.
        """
        what = f"{method} {path}"
        params = {k: v for k, v in (params or {}).items() if v is not None}
        last_problem = ""
        retry_after: float | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self._delay(attempt, retry_after))
                retry_after = None
            try:
                with self._send(
                    method, path, json=json, params=params, headers=headers, upload=upload
                ) as resp:
                    if resp.status_code in _RETRY_STATUSES:
                        resp.read()
                        retry_after = _retry_after(resp)
                        last_problem = f"HTTP {resp.status_code}{_detail_suffix(resp)}"
                        continue
                    if resp.status_code >= 400:
                        resp.read()
                        raise _api_error(resp, what)
                    if stream_to is not None:
                        _save_stream(resp, stream_to)
                    else:
                        resp.read()
                    return resp
            except httpx.TransportError as exc:
                last_problem = _transport_problem(exc)
        attempts = self.retries + 1
        raise ServiceUnreachable(
            f"the Parry server at {self.server} did not answer {what} "
            f"({last_problem}, {attempts} attempt{'s' if attempts > 1 else ''}); is it running and reachable?"
        )

    @contextlib.contextmanager
    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, Any],
        headers: Mapping[str, str] | None,
        upload: tuple[Path, Mapping[str, str]] | None,
    ) -> Iterator[httpx.Response]:
        if upload is None:
            request = self._http.build_request(method, path, json=json, params=params, headers=headers)
            response = self._http.send(request, stream=True)
        else:
            file, fields = upload
            with file.open("rb") as fh:
                request = self._http.build_request(
                    method,
                    path,
                    params=params,
                    headers=headers,
                    files={"file": (file.name, fh)},
                    data=dict(fields),
                    timeout=self.upload_timeout,
                )
                response = self._http.send(request, stream=True)
        try:
            yield response
        finally:
            response.close()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay: float = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2  # jitter: retries from many pipelines spread out
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff * 6))
        return delay

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"the server answered {method} {path} with something that is not JSON"
            ) from None

    # ---- health ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = self._json("GET", "/healthz")
        return body

    # ---- models and datasets -----------------------------------------------------------------

    def upload_model(self, path: Path, *, name: str | None = None, output: str = "auto") -> dict[str, Any]:
        fields = {"output": output, **({"name": name} if name else {})}
        body: dict[str, Any] = self._json("POST", "/v1/models", upload=(path, fields))
        return body

    def upload_dataset(self, path: Path, *, name: str | None = None) -> dict[str, Any]:
        fields = {"name": name} if name else {}
        body: dict[str, Any] = self._json("POST", "/v1/datasets", upload=(path, fields))
        return body

    def find_model(self, sha256: str) -> dict[str, Any] | None:
        """The caller's model with these bytes, or None."""
        return _match_sha(self._json("GET", "/v1/models", params={"sha256": sha256}), sha256)

    def find_dataset(self, sha256: str) -> dict[str, Any] | None:
        """The caller's dataset with these bytes, or None."""
        return _match_sha(self._json("GET", "/v1/datasets", params={"sha256": sha256}), sha256)

    def ensure_model(
        self, path: Path, *, name: str | None = None, output: str = "auto"
    ) -> tuple[dict[str, Any], bool]:
        """The server's model for this file, uploading it only if the server lacks these bytes.

        Returns (model, uploaded).
        """
        existing = self.find_model(file_sha256(path))
        if existing is not None:
            return existing, False
        return self.upload_model(path, name=name, output=output), True

    def ensure_dataset(self, path: Path, *, name: str | None = None) -> tuple[dict[str, Any], bool]:
        """The server's dataset for this file, uploading it only if the server lacks these bytes."""
        existing = self.find_dataset(file_sha256(path))
        if existing is not None:
            return existing, False
        return self.upload_dataset(path, name=name), True

    def get_model(self, model_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._json("GET", f"/v1/models/{model_id}")
        return body

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._json("GET", f"/v1/datasets/{dataset_id}")
        return body

    def list_models(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json("GET", "/v1/models")["items"]
        return items

    def list_datasets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._json("GET", "/v1/datasets")["items"]
        return items

    def delete_model(self, model_id: str) -> None:
        self.request("DELETE", f"/v1/models/{model_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{dataset_id}")

    def wait_model(
        self, model_id: str, *, timeout: float = 600.0, poll_interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll until the model is `ready` or `rejected`; WaitTimeout after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            model = self.get_model(model_id)
            if model["status"] != "validating":
                return model
            if time.monotonic() > deadline:
                raise WaitTimeout(f"model {model_id} was still being validated after {timeout:g} s")
            self._sleep(poll_interval)
            poll_interval = min(poll_interval * 1.5, 5.0)

    # ---- jobs --------------------------------------------------------------------------------

    def submit_evaluation(
        self, spec: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/evaluations; the same key on every retry, a fresh one when none is given."""
        return self._submit("/v1/evaluations", spec, idempotency_key)

    def submit_training(
        self, spec: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/trainings; the same key on every retry, a fresh one when none is given."""
        return self._submit("/v1/trainings", spec, idempotency_key)

    def submit_hard_set(
        self, spec: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/hard-sets; the same key on every retry, a fresh one when none is given."""
        return self._submit("/v1/hard-sets", spec, idempotency_key)

    def _submit(self, path: str, spec: Mapping[str, Any], key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key or new_idempotency_key()}
        body: dict[str, Any] = self._json("POST", path, json=dict(spec), headers=headers)
        return body

    def get_job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._json("GET", f"/v1/jobs/{job_id}")
        return body

    def list_jobs(
        self,
        *,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = self._json(
            "GET", "/v1/jobs", params={"kind": kind, "status": status, "limit": limit, "cursor": cursor}
        )
        return body

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._json("POST", f"/v1/jobs/{job_id}/cancel")
        return body

    def follow_job(self, job_id: str, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's live events (`GET /v1/jobs/{id}/events`): a dict with `status` and `progress` at each
        change, ending with the final one. Stops early, without an error, when the stream is not there (an
        older server, an unknown job), breaks, or `timeout` seconds pass: the caller then polls instead."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # The server sends a keep-alive every 15 s; a read silent for much longer means a dead stream.
        read = 45.0 if deadline is None else max(0.1, min(45.0, deadline - time.monotonic()))
        request_timeout = httpx.Timeout(read, connect=min(read, 10.0))
        headers = {"Accept": "text/event-stream"}
        try:
            with self._http.stream(
                "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=request_timeout
            ) as response:
                kind = response.headers.get("content-type", "")
                if response.status_code != 200 or not kind.startswith("text/event-stream"):
                    return
                for name, data in _sse_events(response.iter_lines()):
                    if name in ("status", "progress"):
                        yield data
                    elif name == "end":
                        if data.get("status") is not None:
                            yield {**data, "progress": None}
                        return
                    if deadline is not None and time.monotonic() > deadline:
                        return
        except (httpx.TransportError, ValueError):
            return  # polling takes over, with its retries and its error sentences

    def wait_job(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        max_poll_interval: float = 3.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Follow the job's live events until it is succeeded, failed or cancelled, then return the Job
        (whatever that status); without live events (an older server, a dropped stream), poll instead.

        `on_update` sees every update (for a progress bar). WaitTimeout after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for update in self.follow_job(job_id, timeout=timeout):
            if update["status"] in TERMINAL_STATUSES:
                break  # the loop below reads the whole Job once
            if on_update is not None:
                on_update(update)
        while True:
            job = self.get_job(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in TERMINAL_STATUSES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"job {job_id} was still {job['status']} after {timeout:g} s")
            self._sleep(poll_interval)
            poll_interval = min(poll_interval * 1.5, max_poll_interval)

    def report(self, job_id: str, *, format: str = "json") -> str:
        """The job's report as text (JSON, JUnit XML, Markdown or HTML)."""
        return self.request("GET", f"/v1/jobs/{job_id}/report", params={"format": format}).text

    def result(self, job_id: str) -> dict[str, Any]:
        """The result object of a succeeded job (`GET /v1/jobs/{id}/report`)."""
        body: dict[str, Any] = self._json("GET", f"/v1/jobs/{job_id}/report")
        return body

    def list_artifacts(self, job_id: str) -> list[dict[str, Any]]:
        body = self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
        return items

    def download_artifact(self, job_id: str, name: str, dest: Path) -> Path:
        """Stream one artifact to `dest` (a file path); written atomically, so a failed try leaves nothing."""
        self.request("GET", f"/v1/jobs/{job_id}/artifacts/{name}", stream_to=dest)
        return dest


def _match_sha(body: Any, sha256: str) -> dict[str, Any] | None:
    # Filter here too: a server without the `sha256` filter answers the whole list.
    for item in body.get("items", []) if isinstance(body, dict) else []:
        if isinstance(item, dict) and item.get("sha256") == sha256:
            return item
    return None


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, JSON data) of each Server-Sent Event; comments and `retry:` lines are skipped."""
    name, data = "message", ""
    for line in lines:
        if not line:
            if data:
                body = json.loads(data)
                yield name, body if isinstance(body, dict) else {}
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def _save_stream(response: httpx.Response, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with partial.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare, and the backoff is a fine fallback


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _detail_suffix(response: httpx.Response) -> str:
    problem = _problem(response)
    detail = problem.get("detail") if problem else None
    return f": {detail}" if isinstance(detail, str) and detail else ""


def _api_error(response: httpx.Response, what: str) -> ApiError:
    status = response.status_code
    problem = _problem(response)
    detail = problem.get("detail") if problem else None
    if status == 401:
        message = "the server refused the API key (HTTP 401); set PARRY_API_KEY or --api-key to a valid key"
    elif isinstance(detail, str) and detail:
        message = cli_hints(detail).rstrip(".") + f" (HTTP {status})"
    else:
        message = f"the server answered HTTP {status} to {what}"
    return ApiError(message, status=status, problem=problem)


def cli_hints(detail: str) -> str:
    """The API's sentence with each route it suggests replaced by the `parry` command that does it."""
    for route, command in CLI_HINTS.items():
        detail = detail.replace(route, command)
    return detail


def _transport_problem(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
