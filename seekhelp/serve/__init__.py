"""`seekhelp serve`: the trained SLM as an OpenAI-compatible privacy proxy in front of any LLM.

An app changes its base URL and keeps its OpenAI client. Its question goes only to the local SLM, which runs the
project's one episode loop (`seekhelp.strategies.run_strategy`) and asks the upstream LLM what it needs; only those
messages, after the outgoing privacy guard, leave the machine. The reply is a standard chat completion plus an
audit trail of everything that was sent and received.

    app = create_app(StrategyContext(slm, llm, RuntimeConfig(guard="block")), ServeSettings())
    with serving(app) as root:
        openai.OpenAI(base_url=root + "/v1", api_key="-").chat.completions.create(model="seekhelp/dynamic", ...)
"""

from seekhelp.serve.app import ServeSettings, create_app
from seekhelp.serve.server import serve_forever, serving

__all__ = ["ServeSettings", "create_app", "serve_forever", "serving"]
