"""Worker process for the refresh-contention test (run as a script, not collected by pytest).

Usage: contention_worker.py API_DOMAIN TOKEN_FILE THREADS ASYNC_TASKS

Prints ``ready``, waits for a line on stdin, then lets THREADS sync clients and ASYNC_TASKS
async clients (each with its own FileTokenStore on the same file) call ``/me`` at once.
Prints one JSON line: the access token each caller's request was accepted with.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

from roomkey.lockme import AsyncLockmeClient, FileTokenStore, LockmeClient, OAuthConfig


def main() -> None:
    api_domain, token_file, threads, tasks = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5])
    oauth = OAuthConfig(
        "roomkey", "contention-secret", "http://127.0.0.1/cb", api_domain=api_domain
    )
    barrier = threading.Barrier(threads + 1)
    results: list[str] = []
    lock = threading.Lock()

    def sync_caller() -> None:
        with LockmeClient(oauth, FileTokenStore(token_file), lock_timeout=30) as client:
            barrier.wait()
            user = client.me()
            with lock:
                results.append(str(user.model_extra["seen_token"] if user.model_extra else ""))
                results.append(client.token().access_token)

    async def async_callers() -> None:
        async def one() -> None:
            async with AsyncLockmeClient(oauth, FileTokenStore(token_file)) as client:
                user = await client.me()
                token = await client.token()
                with lock:
                    results.append(str(user.model_extra["seen_token"] if user.model_extra else ""))
                    results.append(token.access_token)

        barrier.wait()
        await asyncio.gather(*(one() for _ in range(tasks)))

    print("ready", flush=True)
    sys.stdin.readline()
    workers = [threading.Thread(target=sync_caller) for _ in range(threads)]
    workers.append(threading.Thread(target=lambda: asyncio.run(async_callers())))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
