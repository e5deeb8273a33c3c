"""An instant in-process backend, so the overhead benchmark measures the harness alone."""

from pytest_llmeval.backends.base import Backend, Completion


class Echo(Backend):
    mode = "batch"

    def generate_batch(self, requests, cancelled=None):
        return [
            Completion(
                text=r.message_list[-1]["content"], latency_s=0.001, prompt_tokens=4, completion_tokens=4
            )
            for r in requests
        ]


def pytest_llmeval_register_backends():
    return {"echo": Echo}
