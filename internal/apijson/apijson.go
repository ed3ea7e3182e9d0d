// Package apijson holds the JSON conventions shared by the federation API
// and an agent's local API: strict request decoding, indented answers, and
// the error shape {"error", "code"} that client.Error decodes.
package apijson

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

var errEmpty = errors.New("empty; want a JSON object")

// Unmarshal decodes the one JSON value r holds. Unknown fields and
// trailing data are errors, so that a typo does not silently do something
// else than meant; whitespace may follow the value.
func Unmarshal(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errEmpty
		}
		return err
	}
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return errors.New("unexpected data after the JSON value")
	default:
		// A body cut off by its size limit is told apart by Decode.
		return fmt.Errorf("unexpected data after the JSON value: %w", err)
	}
}

// Decode reads a request body of at most limit bytes with Unmarshal. Its
// error is a message for the caller, naming what is wrong with the body.
func Decode(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	err := Unmarshal(http.MaxBytesReader(w, r.Body, limit), v)
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return fmt.Errorf("request body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, errEmpty):
		return errors.New("request body is empty; want a JSON object")
	default:
		return fmt.Errorf("request body: %w", err)
	}
}

// Write answers v as indented JSON with status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Error answers an error: msg for people, code for programs.
func Error(w http.ResponseWriter, status int, code, msg string) {
	Write(w, status, map[string]string{"error": msg, "code": code})
}
