// Package activation owns enrollments and activations: the QR code with its
// 256-bit secret and the numeric password shown beside it, attempts, expiry
// and single use, and the credential package — built, sealed at rest,
// streamed in chunks, resumed, confirmed.
//
// The database holds a lookup hash of the secret and a verifier keyed by the
// secret and the gateway's pepper over the password, never either value: a
// copy of the database, even with the QR text, tests no password offline and
// opens no package (the pepper is sealed under the HSM's KEK;
// docs/config.md says exactly what holds).
package activation
