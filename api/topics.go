package api

import (
	"errors"
	"fmt"
	"net/http"

	mlog "github.com/millstream/millstream/log"
)

type topicJSON struct {
	Name       string          `json:"name"`
	Partitions []partitionJSON `json:"partitions"`
	Config     topicConfigJSON `json:"config"`
}

type partitionJSON struct {
	Partition int32 `json:"partition"`
	Start     int64 `json:"start"`
	End       int64 `json:"end"`
	Bytes     int64 `json:"bytes"`
	Segments  int   `json:"segments"`
}

type topicConfigJSON struct {
	Partitions int32 `json:"partitions"`
	// RetentionAge is a Go duration, or "-1" for no limit: the
	// configuration file's spelling, so the two read alike.
	RetentionAge   string `json:"retention_age"`
	RetentionBytes int64  `json:"retention_bytes"`
}

func newTopicJSON(t mlog.TopicInfo) topicJSON {
	out := topicJSON{
		Name:       t.Name,
		Partitions: make([]partitionJSON, len(t.Partitions)),
		Config: topicConfigJSON{
			Partitions:     t.Config.Partitions,
			RetentionAge:   t.Config.RetentionAge.String(),
			RetentionBytes: t.Config.RetentionBytes,
		},
	}
	if t.Config.RetentionAge < 0 {
		out.Config.RetentionAge = "-1"
	}
	if t.Config.RetentionBytes < 0 {
		out.Config.RetentionBytes = -1
	}
	for i, p := range t.Partitions {
		out.Partitions[i] = partitionJSON{Partition: p.Partition, Start: p.Start, End: p.End, Bytes: p.Bytes, Segments: p.Segments}
	}
	return out
}

func (s *Server) listTopics(w http.ResponseWriter, r *http.Request) {
	topics, err := s.log.Topics(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	out := make([]topicJSON, len(topics))
	for i, t := range topics {
		out[i] = newTopicJSON(t)
	}
	writeJSON(w, http.StatusOK, map[string][]topicJSON{"topics": out})
}

func (s *Server) getTopic(w http.ResponseWriter, r *http.Request) {
	t, ok := s.topic(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, newTopicJSON(t))
}

// topic looks up the {topic} of the request's path, or answers with the
// error and returns false.
func (s *Server) topic(w http.ResponseWriter, r *http.Request) (mlog.TopicInfo, bool) {
	name := r.PathValue("topic")
	if err := mlog.ValidateTopicName(name); err != nil {
		writeError(w, http.StatusBadRequest, "invalid topic name", err.Error())
		return mlog.TopicInfo{}, false
	}
	t, err := s.log.Topic(r.Context(), name)
	switch {
	case errors.Is(err, mlog.ErrUnknownTopic):
		// Say how to find the topics rather than list them: the caller may
		// only be guessing names.
		writeError(w, http.StatusNotFound, "unknown topic",
			fmt.Sprintf("topic %q does not exist; GET /api/v1/topics lists the topics", name))
		return mlog.TopicInfo{}, false
	case err != nil:
		s.internalError(w, r, err)
		return mlog.TopicInfo{}, false
	}
	return t, true
}
