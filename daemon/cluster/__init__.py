"""Several hosts on one inbox: the coordinator (`stylebox run` with queue.url) sends jobs through
Dramatiq on Redis to `stylebox worker` processes and applies what they report to its journal,
which stays the truth; the broker only carries."""
