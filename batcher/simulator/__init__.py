"""A stand-in for Capillary's deLinkCustomer API: profile -> state, quota, faults -> server."""
