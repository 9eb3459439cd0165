"""`kangaroo-edge chat` end to end: through a pseudo-terminal (readline, Ctrl-C as the terminal's
interrupt character, Ctrl-D) and through pipes (no decoration, SIGINT, end of input)."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
import threading
import time


CHAT = [sys.executable, "-m", "kangaroo_edge.cli.main", "chat", "-c", "1024", "-t", "2", "-n", "24",
        "--temp", "0", "--no-history"]
LONG_QUESTION = "Write a long story about a kangaroo who learns to fly, with many details."
TIMEOUT = 300  # seconds per expectation: generous, the machine is shared


class Reader:
    """Collects everything a file descriptor yields, in a thread; `expect` waits for text."""

    def __init__(self, fd: int):
        self.fd, self.buf, self.pos = fd, b"", 0
        self._lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:  # the pty's other side closed
                return
            if not data:
                return
            with self._lock:
                self.buf += data

    def text(self) -> str:
        with self._lock:
            return self.buf.decode("utf-8", "replace")

    def expect(self, needle: str, timeout: float = TIMEOUT) -> str:
        """Waits for needle after the previous match; returns the text up to and including it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                i = self.buf.find(needle.encode(), self.pos)
                if i >= 0:
                    out = self.buf[self.pos:i + len(needle)]
                    self.pos = i + len(needle)
                    return out.decode("utf-8", "replace")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {needle!r}; output so far:\n{self.text()[-3000:]}")

    def wait_for_more(self, n_bytes: int, timeout: float = TIMEOUT) -> None:
        """Waits until n_bytes more arrived after the last match (an answer is being streamed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.buf) - self.pos >= n_bytes:
                    return
            time.sleep(0.01)
        raise AssertionError(f"no streamed answer; output so far:\n{self.text()[-3000:]}")


def _wait(proc: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_chat_in_a_terminal():
    master, slave = pty.openpty()

    def make_controlling_tty() -> None:  # so that ^C on the terminal sends SIGINT to the chat
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(CHAT, stdin=slave, stdout=slave, stderr=slave, preexec_fn=make_controlling_tty,
                            close_fds=True)
    os.close(slave)
    out = Reader(master)

    def send(line: str) -> None:
        os.write(master, line.encode() + b"\r")

    try:
        out.expect("Ctrl-D to quit")
        out.expect("> ")
        send("What is the capital of France?")
        turn1 = out.expect("tokens/s")
        assert "\x1b[2m" in turn1  # the speed line is dim on a terminal
        out.expect("> ")
        send("And of Germany?")
        out.expect("tokens/s")
        out.expect("> ")
        send("/stats")
        assert "4 messages" in out.expect("> ")

        send("/reset")
        out.expect("(conversation cleared)")
        send("/set max 400")
        out.expect("(max = 400)")
        out.expect("> ")
        send(LONG_QUESTION)
        out.expect(LONG_QUESTION)  # the terminal's echo
        out.wait_for_more(40)  # the answer is streaming
        os.write(master, b"\x03")  # Ctrl-C
        out.expect("[interrupted after")
        out.expect("> ")
        send("/stats")
        assert "2 messages" in out.expect("> ")  # the question and the partial answer stayed

        send("/set max 16")
        out.expect("> ")
        send("What is 2+2?")
        out.expect("tokens/s")
        out.expect("> ")
        send("/stats")
        assert "4 messages" in out.expect("> ")
        os.write(master, b"\x04")  # Ctrl-D
        assert _wait(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert "Traceback" not in out.text()


def test_chat_through_pipes():
    proc = subprocess.Popen(CHAT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Reader(proc.stdout.fileno())

    def send(line: str) -> None:
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    try:
        send("What is the capital of France?")
        out.expect("tokens/s")
        send("And of Germany?")
        out.expect("tokens/s")
        send("/stats")
        out.expect("4 messages")
        send("/reset")
        out.expect("(conversation cleared)")
        send("/set max 400")
        out.expect("(max = 400)")
        send(LONG_QUESTION)
        out.wait_for_more(40)
        proc.send_signal(signal.SIGINT)
        out.expect("[interrupted after")
        send("/stats")
        out.expect("2 messages")
        send("/set max 16")
        send("What is 2+2?")
        out.expect("tokens/s")
        proc.stdin.close()  # end of input: the chat ends
        assert _wait(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.text()
    assert "Traceback" not in text
    assert "\x1b[" not in text  # no terminal decoration in a pipe
    assert "> " not in text.splitlines()[0]  # no prompt


def test_chat_samples_with_llama_cpp_defaults():
    cmd = [a for a in CHAT if a not in ("--temp", "0")]
    r = subprocess.run(cmd, input=b"/stats\n", capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert b"settings: temp 0.8, top_k 40, top_p 0.95, min_p 0.05," in r.stdout


def test_stats_line_says_when_speculation_stayed_off():
    from kangaroo_edge.cli.common import format_stats

    off = {"predicted_n": 24, "predicted_per_second": 50.0, "prompt_n": 10, "prompt_per_second": 300.0,
           "speculative": True, "tau": "auto", "cycles": 0, "mean_accepted": None, "plain_steps": 23}
    line = format_stats(off)
    assert "speculation stayed off" in line and "per verification" not in line
    on = {**off, "cycles": 8, "mean_accepted": 2.5}
    assert "2.50 tokens per verification" in format_stats(on)
