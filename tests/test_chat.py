"""`makemore chat`: the context of each answer (earlier turns kept while they fit, the oldest left
out first), --once with --json, and the interactive loop driven through a real pseudo-terminal."""

import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import makemore
from makemore import pairs
from makemore.chat import Conversation, Dropped
from makemore.cli import app
from makemore.errors import MakemoreError
from makemore.sample import Output, Piece, Request, Sampling

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["ab", "ba", "abc", "cab", "bca", "aab", "bba", "cca", "acb", "bac", "cba", "abb", "ccb", "bcc", "aca", "cac"]
TEMPLATE = "Q {instruction}\nA {response}"


@pytest.fixture(scope="module")
def pairs_run(tmp_path_factory):
    """A tiny transformer trained on reversing words of a, b and c, with a block for two or three turns."""
    root = tmp_path_factory.mktemp("chat")
    (root / "qa.jsonl").write_text("".join(json.dumps({"prompt": w, "response": w[::-1]}) + "\n" for w in WORDS * 3))
    (root / "t.txt").write_text(TEMPLATE)
    result = CliRunner().invoke(app, ["train", str(root / "qa.jsonl"), "--template", str(root / "t.txt"), "--block-size", "32",
                                      "--set", "n_layer=1", "--set", "n_embd=32", "--max-steps", "80", "--eval-interval", "80",
                                      "--out", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


def conversation(run, room=None):
    ckpt = makemore.load(run).checkpoint
    return Conversation(ckpt.model, ckpt.tokenizer, ckpt.training.data["template"], Request(Sampling(temperature=0)), room)


def answer_of(events):
    return next(e for e in events if isinstance(e, Output))


def test_each_answer_follows_the_earlier_turns_and_the_oldest_go_first(pairs_run):
    conv = conversation(pairs_run, room=4)
    tok = conv.tok
    first = answer_of(conv.reply("abc"))
    turn1 = [tok.eot_id, *tok.encode(pairs.render(TEMPLATE, "abc")), *tok.encode(first.text)]
    assert conv.turns == [turn1]
    ids, dropped = conv.context("ab")
    assert dropped == 0 and ids == turn1 + [tok.eot_id, *tok.encode("Q ab\nA ")]  # the second turn sees the first
    answer_of(conv.reply("ab"))
    answer_of(conv.reply("ba"))
    turns = list(conv.turns)
    prompt = [tok.eot_id, *tok.encode("Q cab\nA ")]
    assert len(prompt) + 4 + len(turns[2]) <= 32 < len(prompt) + 4 + len(turns[2]) + len(turns[1])  # room for the last turn only
    assert conv.context("cab") == (turns[2] + prompt, 2)
    events = list(conv.reply("cab"))
    assert [e.turns for e in events if isinstance(e, Dropped)] == [2] and answer_of(events).row["dropped_turns"] == 2
    with pytest.raises(MakemoreError, match="the message is 3[0-9] tokens"):
        conv.context("abc" * 10)


def test_chat_once_json_answers_one_message(pairs_run):
    result = CliRunner().invoke(app, ["chat", "-c", str(pairs_run), "--once", "abc", "--temperature", "0", "--json"])
    row = json.loads(result.stdout)
    assert result.exit_code == 0 and row["message"] == "abc" and row["ended"] in ("end", "length")
    assert row["context_tokens"] == 9 and row["dropped_turns"] == 0
    result = CliRunner().invoke(app, ["chat", "-c", str(pairs_run), "--json"])
    assert result.exit_code == 2 and "--json: only with --once" in result.output


class Terminal:
    """`makemore ARGS` on a pseudo-terminal of its own (its controlling terminal: Ctrl-C is a SIGINT from
    the terminal, Ctrl-D an end of input), read until a text appears."""

    def __init__(self, *args):
        env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TERM": "dumb"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.execve(sys.executable, [sys.executable, "-m", "makemore", *map(str, args)], env)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Everything read before `text`, which must appear within `timeout` seconds (and is read too)."""
        end = time.monotonic() + timeout
        while text not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"{text!r} never came; the terminal shows {self.seen!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.seen += os.read(self.fd, 4096).decode("utf-8", "replace").replace("\r\n", "\n")
                except OSError:  # the child closed the terminal
                    break
        assert text in self.seen, f"{text!r} never came; the terminal shows {self.seen!r}"
        at = self.seen.index(text) + len(text)
        before, self.seen = self.seen[: at - len(text)], self.seen[at:]
        return before

    def read_for(self, seconds: float) -> str:
        """What comes within `seconds`."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                self.seen += os.read(self.fd, 4096).decode("utf-8", "replace")
        text, self.seen = self.seen, ""
        return text

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self, timeout: float = 30.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                select.select([self.fd], [], [], 0.1) and os.read(self.fd, 4096)
            except OSError:
                pass
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the chat did not end")


@pytest.mark.slow
def test_chat_through_a_terminal_streams_answers_keeps_turns_and_ends_at_ctrl_d(pairs_run):
    model = makemore.load(pairs_run)
    expected = [model.sample(1, prompt=w, temperature=0)[0] for w in ("abc", "cab")]
    term = Terminal("chat", "-c", pairs_run, "--temperature", "0")
    term.expect("> ")
    term.send("abc\n")
    assert term.expect("> ").strip().splitlines()[-1] == expected[0]  # the echoed message, then the answer
    term.send("cab\n")
    shown = term.expect("> ")
    assert "left out" not in shown  # the second turn has the first before it
    conv = conversation(pairs_run)
    answer_of(conv.reply("abc"))
    assert shown.strip().splitlines()[-1] == answer_of(conv.reply("cab")).text  # what the library answers with both turns
    for word in ("bca", "ba", "acb"):
        term.send(word + "\n")
        shown = term.expect("> ")
    assert "(left out the oldest turn" in shown or "oldest turns" in shown  # by now the first turns no longer fit
    term.send("\x04")  # Ctrl-D at the prompt: the end
    assert term.exit_code() == 0
    assert expected[1] == model.sample(1, prompt="cab", temperature=0)[0]


@pytest.mark.slow
def test_ctrl_c_stops_an_answer_and_returns_to_the_prompt(tmp_path):
    text = "".join(f"### Instruction:\n{w}\n\n### Response:\n{w[::-1]}\n\n" for w in WORDS * 4)
    (tmp_path / "t.txt").write_text(text)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "t.txt"), "--mode", "text", "--set", "n_layer=1", "--set", "n_embd=16",
                                      "--max-steps", "30", "--eval-interval", "30", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    # a text-mode model never saw the end token, so greedily it never says it: the answer runs until stopped
    term = Terminal("chat", "-c", tmp_path / "run", "--temperature", "0", "--max-new-tokens", "10000000")
    term.expect("> ")
    term.send("abc\n")
    term.expect("abc\n")  # the terminal echoes the message
    assert len(term.read_for(1.5)) > 10  # the answer streams: text comes while it is still being made
    term.send("\x03")  # Ctrl-C
    term.expect("(answer stopped)")
    term.expect("> ")
    term.send("\x04")
    assert term.exit_code() == 0
