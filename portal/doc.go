// Package portal is the IdentityGuard-style self-service web portal: the
// person signs in with the PIV card (TLS client authentication), enrolls for
// a derived mobile credential and sees the QR code with the numeric password
// under it, lists and revokes their credentials. Pages are server-rendered,
// work without JavaScript, and load nothing from elsewhere.
//
// The portal is presentation only: a Backend (the gateway) verifies the card
// and does the work.
package portal
