package agent

import (
	"bytes"
	"fmt"
	"image"
	_ "image/png" // QR codes arrive as PNG

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// DecodeQR reads the text of a QR code image (PNG).
func DecodeQR(png []byte) (string, error) {
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
		return "", fmt.Errorf("agent: no QR code found in the image: %w", err)
	}
	return res.GetText(), nil
}
