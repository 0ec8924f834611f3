"""The README quickstart, runnable as it is printed there."""

from d1store import D1Store, Message, Thread

with D1Store("sqlite:///d1store.db") as store:  # or "cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID"
    store.init()  # create missing tables; deployments run `d1store db upgrade`
    store.threads.save(Thread(id="trip-1", resource_id="alice", title="Trip to Lisbon"))
    with store.session() as session:  # one atomic write: one D1 request
        session.messages.save(
            [
                Message(id="m1", thread_id="trip-1", role="user", content="Find me a hotel"),
                Message(id="m2", thread_id="trip-1", role="assistant", content="Here are three options"),
            ]
        )
    store.resources.update("alice", working_memory="# Alice\n- prefers trains")
    for message in store.messages.last("trip-1", 10):
        print(f"{message.role}: {message.content}")
    page = store.threads.list(resource_id="alice", per_page=20)
    print(page.total, [thread.title for thread in page.items])
