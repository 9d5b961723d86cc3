"""One job's painting and publishing, the same whichever driver took the job.

The local worker (daemon/service/worker.py, which claims jobs from the journal) and a worker host
(daemon/cluster/host.py, which takes them from Dramatiq) hand the executor `Work` and get back one
typed `Ended` per job; what an ending does to the journal stays with the drivers and finish.py.
"""
