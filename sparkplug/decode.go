package sparkplug

import (
	"errors"
	"fmt"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
	"google.golang.org/protobuf/proto"
)

// MaxPayloadSize is the largest payload Decode accepts (16 MiB). Sparkplug
// payloads are typically well under a megabyte; the cap bounds the memory one
// message can claim.
const MaxPayloadSize = 16 << 20

// ErrPayloadTooLarge is returned (wrapped) by Decode for a payload over MaxPayloadSize.
var ErrPayloadTooLarge = errors.New("sparkplug: payload too large")

// Decode unmarshals a Sparkplug B protobuf payload. It does not interpret metric
// values; use MetricValue with the metric's datatype for that.
func Decode(payload []byte) (*pb.Payload, error) {
	if len(payload) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(payload), MaxPayloadSize)
	}
	p := new(pb.Payload)
	if err := proto.Unmarshal(payload, p); err != nil {
		return nil, fmt.Errorf("sparkplug: decode payload: %w", err)
	}
	return p, nil
}

// Encode marshals a Sparkplug B payload.
func Encode(p *pb.Payload) ([]byte, error) {
	b, err := proto.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("sparkplug: encode payload: %w", err)
	}
	return b, nil
}
