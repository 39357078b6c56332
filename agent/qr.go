package agent

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/png" // QR codes arrive as PNG

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// maxQRPixels bounds the image DecodeQR decodes: a phone camera's picture
// (50 megapixels) fits; a small crafted PNG declaring a huge size, which
// would have the decoder allocate gigabytes, does not.
const maxQRPixels = 50_000_000

// DecodeQR reads the text of a QR code image (PNG).
func DecodeQR(png []byte) (string, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(png))
	if err != nil {
		return "", fmt.Errorf("agent: QR image: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxQRPixels {
		return "", fmt.Errorf("agent: QR image: %d×%d pixels; give an image of at most %d megapixels", cfg.Width, cfg.Height, maxQRPixels/1_000_000)
	}
	img, _, err := image.Decode(bytes.NewReader(png))
	if err != nil {
		return "", fmt.Errorf("agent: QR image: %w", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", fmt.Errorf("agent: QR image: %w", err)
	}
	// A screenshot or file of the code is a pure barcode: read it exactly.
	// A camera picture needs the detector.
	reader := qrcode.NewQRCodeReader()
	res, err := reader.Decode(bmp, map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		res, err = reader.Decode(bmp, map[gozxing.DecodeHintType]interface{}{gozxing.DecodeHintType_TRY_HARDER: true})
	}
	if err != nil {
		// The decoder's own words ("NotFoundException: startSize = 0")
		// tell a person nothing.
		return "", errors.New("agent: no QR code found in the image: give the PNG that credgw enroll (or the portal) made, or a sharp, whole photo of the code")
	}
	return res.GetText(), nil
}
