// Package hsmsim simulates, on SoftHSM, what credgw meets in the field: PIV
// cards with realistic PIV Authentication, Digital Signature, Key Management
// and Card Authentication certificates from a simulated card issuer (with its
// own OCSP responder and CRLs), bad cards of every kind, and CA tokens.
//
// An environment is one directory holding its own softhsm2.conf and token
// directory (never the system's), the issuer's keys and a state file; the
// `credgw hsm-sim` commands and the tests work on it.
package hsmsim
