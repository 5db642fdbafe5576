package org.caremesh.hapi;

import ca.uhn.fhir.context.BaseRuntimeElementCompositeDefinition;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.rest.annotation.Transaction;
import ca.uhn.fhir.rest.annotation.TransactionParam;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.exceptions.BaseServerResponseException;
import ca.uhn.fhir.rest.server.exceptions.InvalidRequestException;
import ca.uhn.fhir.rest.server.exceptions.ResourceNotFoundException;
import ca.uhn.fhir.util.BundleUtil;
import ca.uhn.fhir.util.FhirTerser;
import ca.uhn.fhir.util.OperationOutcomeUtil;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.hl7.fhir.instance.model.api.IBase;
import org.hl7.fhir.instance.model.api.IBaseBundle;
import org.hl7.fhir.instance.model.api.IBaseOperationOutcome;
import org.hl7.fhir.instance.model.api.IBaseReference;
import org.hl7.fhir.instance.model.api.IBaseResource;

/**
 * POST [base] with a transaction or batch Bundle (FHIR R4/R5 http.html#transaction): entries
 * are POST (with If-None-Exist), PUT (Type/id or conditional Type?query), GET Type/id or
 * DELETE Type/id; every fullUrl (urn:uuid or not) referenced inside the Bundle is rewritten to
 * the id its entry got; a transaction is applied whole or not at all, a batch entry by entry.
 */
public final class TransactionProvider {
  private final MemoryStore store;
  private final FhirContext ctx;
  private final FhirTerser terser;

  TransactionProvider(MemoryStore store) {
    this.store = store;
    this.ctx = store.context();
    this.terser = ctx.newTerser();
  }

  /** One entry's plan: what it does and the id it gets. */
  private static final class Step {
    String method;
    String type;
    String id;
    IBaseResource resource;
    IBaseResource result;
    boolean created;
    boolean noop;
  }

  @Transaction
  public IBaseBundle transaction(@TransactionParam IBaseBundle bundle, RequestDetails request) {
    String kind = BundleUtil.getBundleType(ctx, bundle);
    List<IBase> entries = terser.getValues(bundle, "entry");
    IBaseBundle response = (IBaseBundle) ctx.getResourceDefinition("Bundle").newInstance();
    if ("transaction".equals(kind)) {
      BundleUtil.setBundleType(ctx, response, "transaction-response");
      for (Step step : apply(entries, request.getFhirServerBase())) {
        respond(response, step, null);
      }
    } else if ("batch".equals(kind)) {
      BundleUtil.setBundleType(ctx, response, "batch-response");
      for (IBase entry : entries) {
        try {
          respond(response, apply(List.of(entry), request.getFhirServerBase()).get(0), null);
        } catch (BaseServerResponseException e) {
          respond(response, null, e);
        }
      }
    } else {
      throw new InvalidRequestException("POST to the base needs a Bundle of type transaction or batch");
    }
    return response;
  }

  private List<Step> apply(List<IBase> entries, String base) {
    synchronized (store) {
      List<Step> steps = new ArrayList<>();
      Map<String, String> fullUrls = new HashMap<>();
      Set<String> pending = new HashSet<>();
      for (IBase entry : entries) {
        Step step = plan(entry);
        steps.add(step);
        String fullUrl = terser.getSinglePrimitiveValueOrNull(entry, "fullUrl");
        if (fullUrl != null && step.id != null) {
          fullUrls.put(fullUrl, step.type + "/" + step.id);
        }
        if (step.resource != null && !step.noop) {
          pending.add(step.type + "/" + step.id);
        }
      }
      for (Step step : steps) {
        if (step.resource == null) {
          continue;
        }
        for (IBaseReference ref : terser.getAllPopulatedChildElementsOfType(step.resource, IBaseReference.class)) {
          String target = ref.getReferenceElement().getValue();
          if (target != null && fullUrls.containsKey(target)) {
            ref.setReference(fullUrls.get(target));
          }
        }
        store.checkReferences(step.resource, base, pending);
      }
      for (Step step : steps) {
        switch (step.method) {
          case "POST", "PUT" -> {
            if (!step.noop) {
              step.created = !store.holds(step.type, step.id);
              step.result = store.put(step.type, step.id, step.resource);
            }
          }
          case "DELETE" -> store.delete(step.type, step.id);
          default -> { } // GET was read while planning
        }
      }
      return steps;
    }
  }

  private Step plan(IBase entry) {
    Step step = new Step();
    step.method = terser.getSinglePrimitiveValueOrNull(entry, "request.method");
    String url = terser.getSinglePrimitiveValueOrNull(entry, "request.url");
    if (step.method == null || url == null) {
      throw new InvalidRequestException("Every entry needs request.method and request.url");
    }
    List<IBase> resources = terser.getValues(entry, "resource");
    step.resource = resources.isEmpty() ? null : (IBaseResource) resources.get(0);
    int q = url.indexOf('?');
    String path = q < 0 ? url : url.substring(0, q);
    String[] parts = path.split("/");
    step.type = parts[0];
    if (!ctx.getResourceTypes().contains(step.type)) {
      throw new InvalidRequestException("Unknown resource type in request.url: " + step.type);
    }
    switch (step.method) {
      case "POST" -> {
        requireResource(step);
        String ifNoneExist = terser.getSinglePrimitiveValueOrNull(entry, "request.ifNoneExist");
        IBaseResource match = ifNoneExist == null ? null : store.matchOne(step.type, MemoryResourceProvider.query(ifNoneExist));
        step.noop = match != null;
        step.result = match;
        step.id = match != null ? match.getIdElement().getIdPart() : store.newId(step.type);
      }
      case "PUT" -> {
        requireResource(step);
        if (q >= 0) {
          IBaseResource match = store.matchOne(step.type, url.substring(q + 1));
          // With no match, the body's own id is used if it has one; the parser fills the id of an
          // entry without one from its fullUrl (urn:uuid:...), which is no id: the server assigns one.
          String bodyId = step.resource.getIdElement().getIdPart();
          boolean ownId = bodyId != null && MemoryStore.FHIR_ID.matcher(bodyId).matches();
          step.id = match != null ? match.getIdElement().getIdPart() : ownId ? bodyId : store.newId(step.type);
        } else if (parts.length == 2) {
          step.id = parts[1];
        } else {
          throw new InvalidRequestException("PUT needs Type/id or Type?query");
        }
      }
      case "GET", "DELETE" -> {
        if (parts.length != 2) {
          throw new InvalidRequestException(step.method + " entries need Type/id in this test server");
        }
        step.id = parts[1];
        step.result = store.current(step.type, step.id);
        if (step.result == null) {
          throw new ResourceNotFoundException(step.type + "/" + step.id);
        }
        step.noop = true;
      }
      default -> throw new InvalidRequestException("Unsupported entry method " + step.method);
    }
    if (step.resource != null) {
      step.resource.setId(step.type + "/" + step.id);
    }
    return step;
  }

  private static void requireResource(Step step) {
    if (step.resource == null) {
      throw new InvalidRequestException(step.method + " entries need a resource");
    }
  }

  private void respond(IBaseBundle response, Step step, BaseServerResponseException error) {
    IBase entry = terser.addElement(response, "entry");
    BaseRuntimeElementCompositeDefinition<?> entryDef = (BaseRuntimeElementCompositeDefinition<?>)
        ctx.getResourceDefinition("Bundle").getChildByName("entry").getChildByName("entry");
    if (error != null) {
      terser.setElement(entry, "response.status", Integer.toString(error.getStatusCode()));
      IBaseOperationOutcome oo = OperationOutcomeUtil.newInstance(ctx);
      OperationOutcomeUtil.addIssue(ctx, oo, "error", error.getMessage(), null, "processing");
      IBase responseElement = terser.getValues(entry, "response").get(0);
      BaseRuntimeElementCompositeDefinition<?> responseDef = (BaseRuntimeElementCompositeDefinition<?>)
          entryDef.getChildByName("response").getChildByName("response");
      responseDef.getChildByName("outcome").getMutator().setValue(responseElement, oo);
      return;
    }
    String status = step.method.equals("DELETE") ? "204 No Content" : step.created ? "201 Created" : "200 OK";
    terser.setElement(entry, "response.status", status);
    if (step.result != null) {
      String version = step.result.getIdElement().getVersionIdPart();
      terser.setElement(entry, "response.location", step.type + "/" + step.id + "/_history/" + version);
      terser.setElement(entry, "response.etag", "W/\"" + version + "\"");
      if (step.method.equals("GET")) {
        entryDef.getChildByName("resource").getMutator().setValue(entry, step.result);
      }
    }
  }
}
