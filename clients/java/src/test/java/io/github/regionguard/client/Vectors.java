package io.github.regionguard.client;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/** The repository's shared vectors (schemas/vectors/), found through the {@code rg.vectors.dir} property the pom sets. */
final class Vectors {
    static final ObjectMapper JSON = new ObjectMapper();

    private Vectors() { }

    static JsonNode read(String name) throws IOException {
        String dir = System.getProperty("rg.vectors.dir", "../../schemas/vectors");
        return JSON.readTree(Files.readString(Path.of(dir, name)));
    }
}
