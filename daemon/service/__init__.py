"""The service: files, folders, the journal and the worker around the engine. Flow: watcher
(settled) -> intake (journal: queued) -> worker (media.decode -> engine -> media.encode) ->
outbox (result, sidecar) -> journal done -> original disposed. It knows files, not tensors."""
