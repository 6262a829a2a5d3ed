"""Bring-up sessions: how to reach a running lab (``access``), a guest's data path state
(``dump``), for a vendor looking at what happened to its NIC step by step."""
