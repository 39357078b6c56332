// Package activation owns enrollments and activations: the QR code with its
// 256-bit secret and the numeric password shown beside it, attempts, expiry
// and single use, and the credential package — built, sealed at rest,
// streamed in chunks, resumed, confirmed.
//
// The database holds a lookup hash of the secret and a verifier keyed by the
// secret over the password, never either value: a stolen database redeems
// nothing, and nothing in the QR lets anyone test a password offline.
package activation
