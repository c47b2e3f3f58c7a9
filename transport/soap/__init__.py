"""SOAP 1.2 as the volet uses it: envelope, WS-Addressing, ``wsse:Security``, MTOM, traces, and
the exchange itself (client side)."""
