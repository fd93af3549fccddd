"""The Hub side: downloads (exact names, verified), uploads, cards, plots, sparse checkpoints.

Importing it registers the Hub as the core's remote store, so ``Ticket.from_pretrained(repo_id)``
and ``Ticket.push_to_hub`` reach the Hub without the core importing this layer.
"""

from hf_tickets.core.remote import RemoteStore, register_remote_store
from hf_tickets.hub.download import download_ticket
from hf_tickets.hub.upload import push_ticket

register_remote_store(RemoteStore(download=download_ticket, push=push_ticket))
