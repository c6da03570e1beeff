"""A Streamlit client without a browser: it speaks the app's own websocket protocol.

What the browser does, and this does too (streamlit 1.67, starlette/uvicorn server):

1. open ``ws://host:port/_stcore/stream`` with the subprotocol ``streamlit``;
2. send a ``BackMsg`` whose ``rerun_script`` is a ``ClientState`` naming the page (its
   ``page_script_hash`` once the server has listed the pages in a ``navigation`` message, or its
   URL path as ``page_name`` before that) and the widget values (none: every widget at its default,
   as for a new visitor);
3. read ``ForwardMsg``s (``new_session``, ``navigation``, ``delta``s, ...) until ``script_finished``.

A page run's time is from 2 to 3. Like the browser, the client keeps the large messages it was sent
(``metadata.cacheable``) and names their hashes in its next ``rerun_script``, so the server sends a
short reference instead of an unchanged image or figure; an entry not seen for
``max_cached_message_age`` runs (from ``new_session``) is dropped, as the browser's cache does. The
client keeps what the page showed as text (markdown,
captions, alerts, exceptions) so a test can check what it says, and the widgets' ids by label so
it can press a button. Images are not fetched from ``/media`` (a browser would; that is static
file serving, cheap next to the script run). It never fetches anything but the given server.

Used by ``bench/load_protocol.py`` (many sessions at once) and ``tests/image/test_image.py``
(every page of the built image).
"""
from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import connect

# The app's pages: (name in the report, URL path as st.navigation gives it in app.py).
PAGES = [("Home", ""), ("Latent map", "Latent_map"), ("Grid decoder", "Grid_decoder"),
         ("Reconstructions", "Reconstructions"), ("Draw", "Draw"), ("Train", "Train")]
FINISHED = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}


class PageError(RuntimeError):
    """The server could not run the page (page not found, compile error, closed connection)."""


@dataclass
class PageRun:
    page: str
    seconds: float
    texts: list[str] = field(default_factory=list)  # markdown, captions, alerts, titles, in order
    exceptions: list[str] = field(default_factory=list)  # st.exception / uncaught errors shown
    widgets: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (widget id, element type)
    widget_fragments: dict[str, str] = field(default_factory=dict)  # label -> id of the fragment drawing it
    elements: int = 0
    received_bytes: int = 0  # websocket payloads of the run, after the message cache

    def text(self) -> str:
        return "\n".join(self.texts)


def wait_for_health(base_url: str, timeout_s: float, process=None) -> float:
    """Poll /_stcore/health until it answers "ok"; seconds waited. `process` (a Popen), if given,
    must stay alive meanwhile."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise PageError(f"the server exited with status {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=5) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return time.monotonic() - start
        except OSError as err:
            last = err
        time.sleep(0.5)
    raise PageError(f"{base_url}/_stcore/health did not answer ok within {timeout_s:.0f} s (last: {last})")


def _element_text(element) -> tuple[str | None, str | None]:
    """(text shown, widget label) of one Element proto; either may be None."""
    kind = element.WhichOneof("type")
    if kind in ("markdown", "heading"):
        return getattr(element, kind).body, None
    if kind == "alert":
        return element.alert.body, None
    if kind == "exception":
        return None, None
    if kind == "imgs":
        captions = [img.caption for img in element.imgs.imgs if img.caption]
        return ("\n".join(captions) or None), None
    if kind == "progress":
        return element.progress.text, None
    widget = getattr(element, kind, None)
    label = getattr(widget, "label", None) if widget is not None else None
    return None, label


class StreamlitSession:
    """One visitor: one websocket, one server-side session (its own st.session_state)."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http"):] + "/_stcore/stream"
        self.page_hashes: dict[str, str] = {}  # url path -> page_script_hash, from `navigation`
        self.session_id = ""
        self._ws = None
        self.auto_reruns: dict[str, float] = {}  # fragment id -> interval (s), from `auto_rerun`
        self.cached: dict[str, list] = {}  # hash of a cacheable message -> [run last seen in, message]
        self.runs, self.max_age = 0, 2  # full runs finished; global.maxCachedMessageAge

    async def __aenter__(self):
        self._ws = await connect(self.ws_url, subprotocols=["streamlit"], max_size=None, open_timeout=60,
                                 ping_interval=None, compression=None)
        return self

    async def __aexit__(self, *exc):
        await self._ws.close()

    async def _send_rerun(self, url_path: str, widget_states=(), fragment_id: str = "", auto: bool = True) -> None:
        msg = BackMsg()
        rerun = msg.rerun_script
        if url_path in self.page_hashes:
            rerun.page_script_hash = self.page_hashes[url_path]
        else:
            rerun.page_name = url_path
        rerun.query_string = ""
        rerun.fragment_id = fragment_id
        rerun.is_auto_rerun = bool(fragment_id) and auto
        rerun.cached_message_hashes.extend(self.cached)
        for state in widget_states:
            rerun.widget_states.widgets.append(state)
        await self._ws.send(msg.SerializeToString())

    async def run_page(self, name: str, url_path: str, widget_states=(), timeout_s: float = 600) -> PageRun:
        """Run one page to its end; the PageRun says what it showed and how long it took."""
        start = time.perf_counter()
        await self._send_rerun(url_path, widget_states)
        run = PageRun(name, 0.0)
        await asyncio.wait_for(self._read_until_finished(run, fragment=False), timeout_s)
        run.seconds = time.perf_counter() - start
        return run

    async def run_fragment(self, fragment_id: str, url_path: str, timeout_s: float = 120, widget_states=(),
                           auto: bool = True) -> PageRun:
        """One rerun of a fragment: an auto-rerun (what the browser does every `run_every`), or with
        auto=False and the widget values, what a widget inside the fragment starts."""
        start = time.perf_counter()
        await self._send_rerun(url_path, widget_states, fragment_id=fragment_id, auto=auto)
        run = PageRun("fragment", 0.0)
        await asyncio.wait_for(self._read_until_finished(run, fragment=True), timeout_s)
        run.seconds = time.perf_counter() - start
        return run

    async def press(self, page: PageRun, label: str, url_path: str, timeout_s: float = 600) -> PageRun:
        """Press the button (or form submit button) labelled `label` on `page`, as a click does."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        if label not in page.widgets:
            raise PageError(f"no widget labelled {label!r} on {page.page}: {sorted(page.widgets)}")
        state = WidgetState(id=page.widgets[label][0], trigger_value=True)
        return await self.run_page(page.page, url_path, [state], timeout_s)

    async def select(self, page: PageRun, label: str, option: str, url_path: str, timeout_s: float = 600) -> PageRun:
        """Choose `option` (its text as shown) in the selectbox labelled `label` on `page`."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        if label not in page.widgets:
            raise PageError(f"no widget labelled {label!r} on {page.page}: {sorted(page.widgets)}")
        state = WidgetState(id=page.widgets[label][0], string_value=option)
        return await self.run_page(page.page, url_path, [state], timeout_s)

    async def _read_until_finished(self, run: PageRun, fragment: bool) -> None:
        while True:
            try:
                data = await self._ws.recv()
            except Exception as err:  # the server closed the connection
                raise PageError(f"{run.page}: connection closed ({err})") from err
            run.received_bytes += len(data)
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if msg.metadata.cacheable and msg.hash:
                self.cached[msg.hash] = [self.runs, msg]
            if kind == "ref_hash":  # the browser shows the message it cached under that hash
                entry = self.cached.get(msg.ref_hash)
                if entry is None:
                    raise PageError(f"{run.page}: the server referred to a message this client never cached")
                entry[0], msg = self.runs, entry[1]
                kind = msg.WhichOneof("type")
            if kind == "new_session":
                self.session_id = msg.new_session.initialize.session_id or self.session_id
                self.max_age = msg.new_session.config.max_cached_message_age or self.max_age
            elif kind == "navigation":
                for page in msg.navigation.app_pages:
                    self.page_hashes[page.url_pathname] = page.page_script_hash
            elif kind == "page_not_found":
                raise PageError(f"{run.page}: page not found ({msg.page_not_found.page_name!r})")
            elif kind == "auto_rerun":
                self.auto_reruns[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                run.elements += 1
                if element.WhichOneof("type") == "exception":
                    run.exceptions.append(f"{element.exception.type}: {element.exception.message}")
                text, label = _element_text(element)
                if text:
                    run.texts.append(text)
                if label:
                    widget = getattr(element, element.WhichOneof("type"))
                    run.widgets[label] = (getattr(widget, "id", ""), element.WhichOneof("type"))
                    if msg.delta.fragment_id:
                        run.widget_fragments[label] = msg.delta.fragment_id
            elif kind == "script_finished":
                status = msg.script_finished
                if status == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    raise PageError(f"{run.page}: the script did not compile")
                if fragment and status == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
                    return
                if not fragment and status in FINISHED:
                    self._age_cache()
                    return

    def _age_cache(self) -> None:
        """The browser's ForwardMsgCache.incrementRunCount: forget messages older than max_age runs."""
        self.runs += 1
        self.cached = {h: e for h, e in self.cached.items() if self.runs - e[0] <= self.max_age}
